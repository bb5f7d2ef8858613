"""Running exported files with zoo's CLI: ``zoo predict / val / benchmark FILE.onnx``, ``zoo sweep --format
onnx``, SAM's two graphs from ``zoo export``, and the one-line refusals (a static graph's size, a missing
onnxruntime). The exported file must give what the checkpoint gives, through the same code."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.cli import main
from zoo.data.shapes import ShapesConfig, render_shapes
from zoo.model import Model

from export_helpers import calibrate_batchnorm, require_runtime, shapes_batch
from tiny_cfgs import TINY_CLASSIFY, TINY_DETECT, TINY_RTDETR, TINY_SAM


@pytest.fixture(autouse=True)
def _outside_the_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _checkpoint(tmp_path: Path, cfg_text: str, name: str) -> Path:
    """A tiny model whose BatchNorm statistics come from shapes images (so scores differ per image), saved."""
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(cfg_text)
    torch.manual_seed(0)
    model = calibrate_batchnorm(Model(cfg), shapes_batch(4, 64))
    return model.save(tmp_path / name / "best.pt")


def _exported(tmp_path: Path, cfg: str, name: str, *export_args: str) -> tuple[Path, Path]:
    """``(best.pt, best.onnx)`` of a fresh ``cfg`` model exported at 64 px with ``export_args``."""
    require_runtime()
    ckpt = _checkpoint(tmp_path, cfg, name)
    assert main(["export", str(ckpt), "--imgsz", "64", *export_args]) == 0
    return ckpt, ckpt.with_suffix(".onnx")


@pytest.fixture
def detector(tmp_path) -> tuple[Path, Path]:
    """``(best.pt, best.onnx)``: the ONNX graph static at 64 for batch 2 (val's batch 3 needs a padded chunk)."""
    return _exported(tmp_path, TINY_DETECT, "det", "--batch", "2")


@pytest.fixture
def rtdetr(tmp_path) -> tuple[Path, Path]:
    """An RT-DETR: unlike an untrained YOLOv10 head (whose boxes all cover the image), its queries give
    small boxes spread over the image, with distinct scores."""
    return _exported(tmp_path, TINY_RTDETR, "rtdetr", "--batch", "2")


@pytest.fixture
def classifier(tmp_path) -> tuple[Path, Path]:
    return _exported(tmp_path, TINY_CLASSIFY, "cls", "--dynamic")


@pytest.fixture
def images(tmp_path) -> Path:
    """Shapes scenes of two aspect ratios, so the letterbox and the mapping back are exercised."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, (h, w) in enumerate(((48, 80), (72, 40))):
        Image.fromarray(render_shapes(ShapesConfig(size=(h, w)), "val", i).image).save(folder / f"im{i}.png")
    return folder


def _predictions(model: Path, images: Path, out: str, *extra: str) -> dict:
    assert main(["predict", str(model), str(images), "--out", out, "--save-json", "--save-txt", *extra]) == 0
    return json.loads((Path(out) / "predictions.json").read_text())


def _assert_same_detections(ref: dict, got: dict) -> int:
    """As many detections, and each of ``ref`` scoring clearly above its last one has one in ``got`` with
    the same class, its score within 5e-4 (the checkpoint runs unfused BatchNorm, the graph folded; ORT's
    kernels differ from torch's in the last bits) and its box within 1e-3 relative (near-equal scores may
    swap places, and the last places may hold different near-ties). Returns the rows compared."""
    assert len(ref["boxes"]) == len(got["boxes"]) > 0
    ref_rows = np.column_stack([ref["boxes"], ref["scores"], ref["classes"]])
    got_rows = np.column_stack([got["boxes"], got["scores"], got["classes"]])
    sure = ref_rows[ref_rows[:, 4] > ref_rows[:, 4].min() + 1e-3]
    used: set[int] = set()
    for row in sure:
        same = [i for i, other in enumerate(got_rows) if i not in used and other[5] == row[5]
                and abs(other[4] - row[4]) <= 5e-4 and np.allclose(other[:4], row[:4], rtol=1e-3, atol=0.02)]
        assert same, f"no exported detection matches {row}"
        used.add(same[0])
    return len(sure)


def test_predict_on_onnx_equals_predict_on_the_checkpoint(rtdetr, images, capsys) -> None:
    ckpt, onnx_file = rtdetr
    ref = _predictions(ckpt, images, "ref", "--max-det", "20", "--imgsz", "64")
    got = _predictions(onnx_file, images, "onnx", "--max-det", "20")  # the graph's own size by default
    assert got["imgsz"] == ref["imgsz"] == 64 and got["names"] == ref["names"]
    compared = 0
    for r, g in zip(ref["images"], got["images"]):
        assert (g["width"], g["height"], g["output"]) == (r["width"], r["height"], r["output"])
        assert g["names"] == r["names"]  # class names from the file's metadata
        compared += _assert_same_detections(r, g)
        # boxes in the original image's pixels, not the 64x64 letterbox
        boxes = np.asarray(g["boxes"])
        assert (boxes[:, [0, 2]] <= g["width"]).all() and (boxes[:, [1, 3]] <= g["height"]).all()
        assert boxes[:, 2:].max() > 64  # im0 is 80 wide, im1 72 high: outside the 64x64 input
    assert compared >= 4
    assert sorted(p.name for p in Path("onnx").iterdir()) == sorted(p.name for p in Path("ref").iterdir())
    assert len((Path("onnx") / "labels" / "im0.txt").read_text().splitlines()) == len(got["images"][0]["boxes"])
    # the Python API: the same Results as Model.predict, through the same code
    results = zoo.load_exported(onnx_file).predict(images, max_det=20)
    expected = Model(ckpt).predict(images, max_det=20, imgsz=64)
    for a, b in zip(results, expected):
        assert a.names == b.names and len(a.boxes) == len(b.boxes) == 20
        np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=5e-4)


def test_predict_on_a_classifier_gives_the_same_top5(classifier, images) -> None:
    ckpt, onnx_file = classifier
    ref = _predictions(ckpt, images, "ref", "--imgsz", "64")
    assert main(["export", str(ckpt), "--imgsz", "64", "--format", "torchscript"]) == 0
    for exported in (onnx_file, ckpt.with_suffix(".torchscript")):
        got = _predictions(exported, images, exported.suffix[1:])
        for r, g in zip(ref["images"], got["images"]):
            assert [c["class"] for c in g["top5"]] == [c["class"] for c in r["top5"]]
            np.testing.assert_allclose([c["prob"] for c in g["top5"]], [c["prob"] for c in r["top5"]], atol=1e-5)
    # a dynamic graph takes another stride multiple
    assert _predictions(onnx_file, images, "onnx96", "--imgsz", "96")["imgsz"] == 96


def test_a_static_graph_refuses_another_size_in_one_line(detector, images, capsys) -> None:
    _, onnx_file = detector
    assert main(["predict", str(onnx_file), str(images), "--imgsz", "96"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--imgsz 96: best.onnx is a static graph for 64x64" in err


def _val_metrics(model: Path, data: str, name: str) -> dict:
    argv = ["val", str(model), "--data", data, "--imgsz", "64", "--batch", "3", "--workers", "0",
            "--device", "cpu", "--conf", "0", "--name", name]  # an untrained head scores under 0.001
    assert main(argv) == 0
    return json.loads((Path("runs/val") / name / "metrics.json").read_text())["metrics"]


def _self_labelled_data(ckpt: Path, root: Path, n: int = 6) -> Path:
    """A YOLO dataset of 64x64 shapes scenes labelled with the checkpoint's own 3 best detections each.

    An untrained detector scores mAP 0 on real labels, and 0 == 0 proves nothing; on its own detections
    its mAP is high and moves with its boxes and scores, so equal metrics need equal detections."""
    folder = root / "images" / "val"
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(render_shapes(ShapesConfig(size=(64, 64)), "val", i).image).save(folder / f"s{i}.png")
    labels = root / "labels" / "val"
    labels.mkdir(parents=True)
    for result in Model(ckpt).predict(folder, conf=0, max_det=3, imgsz=64):  # 64x64: no letterbox padding
        lines = [f"{int(c)} {(x1 + x2) / 128:.6f} {(y1 + y2) / 128:.6f} {(x2 - x1) / 64:.6f} {(y2 - y1) / 64:.6f}"
                 for (x1, y1, x2, y2), c in zip(result.boxes.tolist(), result.cls.tolist())]
        (labels / f"{Path(result.path).stem}.txt").write_text("\n".join(lines) + "\n")
    names = "[" + ", ".join(f"c{i}" for i in range(len(Model(ckpt).names))) + "]"
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: {names}\n")
    return root / "data.yaml"


def test_val_on_onnx_equals_val_on_the_checkpoint(rtdetr, classifier, tmp_path) -> None:
    ckpt, onnx_file = rtdetr
    data = str(_self_labelled_data(ckpt, tmp_path / "self"))
    ref, got = _val_metrics(ckpt, data, "det-pt"), _val_metrics(onnx_file, data, "det-onnx")
    assert ref["mAP50"] > 0.5 and set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-4), key
    ckpt, onnx_file = classifier
    data = "shapes:n_train=2,n_val=16,max_objects=8"  # enough crops for a top-1 above 0 by chance
    ref, got = _val_metrics(ckpt, data, "cls-pt"), _val_metrics(onnx_file, data, "cls-onnx")
    assert 0 < ref["top1"] < 1 and got == pytest.approx(ref, abs=1e-4)


def test_benchmark_prints_the_same_row_for_an_onnx_file(detector, capsys) -> None:
    _, onnx_file = detector
    assert main(["benchmark", str(onnx_file), "--runs", "3", "--warmup", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "64x64, batch 2, onnxruntime:CPUExecutionProvider float32, 1 warm-up + 3 timed runs" in out
    assert "latency   median" in out and "p90" in out and "n/a GFLOPs/image" in out
    assert main(["benchmark", str(onnx_file), "--batch", "1"]) == 2
    assert "static graph for batch 2" in capsys.readouterr().err


def test_sweep_format_onnx_adds_an_ort_column(tmp_path, capsys) -> None:
    require_runtime()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_DETECT)
    argv = ["sweep", str(cfg), "--imgsz", "64", "--runs", "2", "--warmup", "1", "--threads", "1",
            "--format", "onnx", "--no-progress", "--name", "s"]
    assert main(argv) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| variant"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells.index("ORT ms") == cells.index("p90 ms") + 1
    with open(Path("runs/sweep/s/sweep.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and float(rows[0]["ort_latency_ms"]) > 0 and float(rows[0]["latency_ms"]) > 0


def test_sam_exports_two_graphs_from_the_cli_and_the_api(tmp_path, capsys) -> None:
    require_runtime()
    cfg = tmp_path / "tiny-sam.yaml"
    cfg.write_text(TINY_SAM)
    assert main(["export", str(cfg), "--imgsz", "64", "--output", "out/sam"]) == 0
    line = capsys.readouterr().out.strip()
    encoder, decoder = Path("out/sam-encoder.onnx"), Path("out/sam-decoder.onnx")
    assert encoder.is_file() and decoder.is_file() and "\n" not in line
    assert line.startswith(f"exported {encoder} and {decoder} (") and "segment: image encoder + prompt decoder" in line
    path = Model(cfg).export(imgsz=64)
    assert path == Path("tiny-sam-encoder.onnx") and path.is_file() and Path("tiny-sam-decoder.onnx").is_file()
    assert main(["export", str(cfg), "--imgsz", "64", "--half"]) == 2
    assert "--half does not apply to SAM" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["predict", "m.onnx", "imgs"], ["val", "m.onnx"], ["benchmark", "m.onnx"]])
def test_a_missing_onnxruntime_is_one_line_with_the_install_hint(command, monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs the 'onnxruntime' package" in err and "pip install" in err


def test_a_missing_exported_file_is_one_line(capsys) -> None:
    require_runtime()
    assert main(["benchmark", "nowhere.onnx"]) == 2
    assert "exported model 'nowhere.onnx' does not exist" in capsys.readouterr().err
