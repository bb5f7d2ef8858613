"""``zoo predict`` outputs: positional source, numbered run folders, distinct names for inputs with the same
stem, unreadable inputs, ``--save-txt`` / ``--save-json``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny_cfgs import TINY_CLASSIFIER, TINY_RTDETR
from zoo.cli import main


SAM_CFG = Path(__file__).resolve().parents[1] / "cfg" / "sam-tinyvit.yaml"


def _save(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with the tiny cfgs and two images; the test runs from there."""
    (tmp_path / "det.yaml").write_text(TINY_RTDETR)
    (tmp_path / "cls.yaml").write_text(TINY_CLASSIFIER)
    _save(tmp_path / "imgs" / "im0.png", 48, 64, 0)
    _save(tmp_path / "imgs" / "im1.png", 64, 40, 1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_line(err: str) -> str:
    assert err.strip() and "\n" not in err.strip(), err
    assert "Traceback" not in err
    return err.strip()


def test_positional_source_and_numbered_run_folders(work: Path) -> None:
    assert main(["predict", "cls.yaml", "imgs/im0.png", "--imgsz", "32"]) == 0
    assert (work / "runs/predict/predict/im0_pred.png").is_file()
    assert main(["predict", "cls.yaml", "--source", "imgs/im0.png", "--imgsz", "32"]) == 0
    assert (work / "runs/predict/predict2/im0_pred.png").is_file()
    assert main(["predict", "cls.yaml", "imgs", "--imgsz", "32", "--exist-ok"]) == 0  # reuses 'predict'
    assert sorted(p.name for p in (work / "runs/predict/predict").iterdir()) == ["im0_pred.png", "im1_pred.png"]
    assert main(["predict", "cls.yaml", "imgs", "--imgsz", "32", "--project", "elsewhere", "--name", "x"]) == 0
    assert (work / "elsewhere/x/im1_pred.png").is_file()
    assert sorted(p.name for p in (work / "runs/predict").iterdir()) == ["predict", "predict2"]


@pytest.mark.parametrize("argv, words", [
    (["imgs", "--source", "imgs"], "not both"),
    ([], "no source"),
    (["imgs", "--out", "o", "--name", "x"], "--out"),
])
def test_source_and_folder_misuse_is_a_one_line_error(work: Path, capsys: pytest.CaptureFixture,
                                                      argv: list[str], words: str) -> None:
    assert main(["predict", "cls.yaml", *argv, "--imgsz", "32"]) == 2
    assert words in _one_line(capsys.readouterr().err)
    assert not (work / "runs").exists() and not (work / "o").exists()


def test_inputs_with_the_same_stem_get_distinct_outputs(work: Path, capsys: pytest.CaptureFixture) -> None:
    _save(work / "two" / "a" / "img.png", 30, 50, 2)
    _save(work / "two" / "b" / "img.jpg", 60, 20, 3)
    _save(work / "two" / "b" / "IMG_2.png", 20, 20, 4)  # the name a renamed 'img' would take
    assert main(["predict", "cls.yaml", "two", "--imgsz", "32", "--out", "out", "--save-txt", "--save-json"]) == 0
    out = work / "out"
    # sorted inputs: two/a/img.png, two/b/IMG_2.png, two/b/img.jpg -> 'img_2' is taken, so img_3
    assert sorted(p.name for p in out.glob("*.png")) == ["IMG_2_pred.png", "img_3_pred.png", "img_pred.png"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["IMG_2.txt", "img.txt", "img_3.txt"]
    # each output belongs to its own input (drawn at that input's width)
    records = {Path(r["file"]).as_posix(): r for r in json.loads((out / "predictions.json").read_text())["images"]}
    for src in ("two/a/img.png", "two/b/img.jpg", "two/b/IMG_2.png"):
        rec = records[src]
        width = Image.open(work / src).size[0]
        assert Image.open(out / rec["output"]).size[0] == width == rec["width"]


def test_unreadable_inputs_are_skipped_and_none_readable_is_an_error(work: Path, capsys: pytest.CaptureFixture
                                                                     ) -> None:
    (work / "imgs" / "broken.png").write_bytes(b"not a png")
    assert main(["predict", "cls.yaml", "imgs", "--imgsz", "32"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped" in captured.err and "broken.png" in captured.err
    assert "1 unreadable" in captured.out
    assert sorted(p.name for p in (work / "runs/predict/predict").iterdir()) == ["im0_pred.png", "im1_pred.png"]

    assert main(["predict", "cls.yaml", "imgs/broken.png", "--imgsz", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "warning: skipped" in err[0]  # the warning, then one error line
    assert "could be read" in err[1] and "left as it was" not in err[1]
    assert not (work / "runs/predict/predict2").exists()  # nothing claimed


def test_detection_txt_and_json(work: Path) -> None:
    assert main(["predict", "det.yaml", "imgs", "--imgsz", "64", "--conf", "0.0", "--max-det", "5",
                 "--save-txt", "--save-json"]) == 0
    run = work / "runs/predict/predict"
    data = json.loads((run / "predictions.json").read_text())
    assert data["task"] == "detect" and data["imgsz"] == 64 and len(data["images"]) == 2
    for rec in data["images"]:
        assert rec["output"] == Path(rec["file"]).stem + "_pred.png"
        n = len(rec["boxes"])
        assert 0 < n <= 5 and len(rec["scores"]) == len(rec["classes"]) == len(rec["names"]) == n
        assert all(isinstance(name, str) and name for name in rec["names"])
        lines = (run / "labels" / f"{Path(rec['file']).stem}.txt").read_text().splitlines()
        assert len(lines) == n
        for line, box, score, cls in zip(lines, rec["boxes"], rec["scores"], rec["classes"]):
            c, cx, cy, w, h, s = line.split()
            assert int(c) == cls and abs(float(s) - score) < 1e-5
            vals = np.array([cx, cy, w, h], dtype=float)
            assert ((vals >= 0) & (vals <= 1)).all()
            x1, y1, x2, y2 = box
            assert abs(float(cx) * rec["width"] - (x1 + x2) / 2) < 0.05
            assert abs(float(h) * rec["height"] - (y2 - y1)) < 0.05


def test_classification_txt_and_json(work: Path) -> None:
    assert main(["predict", "cls.yaml", "imgs/im1.png", "--imgsz", "32", "--save-txt", "--save-json"]) == 0
    run = work / "runs/predict/predict"
    lines = [ln.split() for ln in (run / "labels" / "im1.txt").read_text().splitlines()]
    assert len(lines) == 4  # top-5 of 4 classes
    probs = [float(p) for _, p in lines]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
    assert sorted(int(c) for c, _ in lines) == [0, 1, 2, 3]
    (rec,) = json.loads((run / "predictions.json").read_text())["images"]
    assert [t["class"] for t in rec["top5"]] == [int(c) for c, _ in lines]
    assert all(isinstance(t["name"], str) for t in rec["top5"])


def test_sam_json_and_no_txt(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(SAM_CFG), "imgs/im0.png", "--imgsz", "64", "--box", "5,5,40,30",
                 "--box", "10,10,30,40", "--save-json"]) == 0
    run = work / "runs/predict/predict"
    assert (run / "im0_sam.png").is_file()
    (rec,) = json.loads((run / "predictions.json").read_text())["images"]
    assert rec["output"] == "im0_sam.png" and len(rec["masks"]) == 2
    for m in rec["masks"]:
        assert set(m) == {"score", "area", "box"} and 0 <= m["area"] <= 48 * 64
    capsys.readouterr()
    assert main(["predict", str(SAM_CFG), "imgs/im0.png", "--imgsz", "64", "--box", "5,5,40,30", "--save-txt"]) == 2
    assert "--save-txt" in _one_line(capsys.readouterr().err)
    assert not (work / "runs/predict/predict2").exists()
