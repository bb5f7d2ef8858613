"""``zoo train`` / ``zoo val`` through zoo.cli.main: outputs, one-line data errors, bad-data counts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tiny_cfgs import TINY_DETECT as BASE_DETECT
from zoo.cli import main

TINY_DETECT = BASE_DETECT.replace("nc: 5", "nc: 3")

COMMON = ["--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # runs/ lands in the temporary folder


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_DETECT)
    return path


def test_train_then_val(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["train", str(cfg), "--data", "shapes:n_train=8,n_val=4", "--epochs", "2", *COMMON])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "mAP50" in out
    assert "nc 3 -> 5" in out  # the head follows the data's five classes
    best = tmp_path / "runs" / "detect" / "train" / "weights" / "best.pt"
    assert best.is_file()

    rc = main(["val", str(best), "--workers", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "shapes (val, 4 images), imgsz 64" in out  # data and size come from the checkpoint
    assert "mAP50-95" in out and "circle" in out

    # A checkpoint is also a starting point: its config and weights are used.
    rc = main(["train", str(best), "--data", "shapes:n_train=4,n_val=2", "--epochs", "1", "--name", "again",
               "--no-plots", *COMMON])
    out = capsys.readouterr().out
    assert rc == 0 and "runs/detect/again" in out


@pytest.mark.parametrize("data, message", [
    ("nowhere/data.yaml", "not found"),
    ("shapes:n_val=0", "empty"),
    ("shapes:bogus=1", "unknown option"),
])
def test_data_errors_are_one_line_exit_2(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          data: str, message: str) -> None:
    rc = main(["train", str(cfg), "--data", data, "--epochs", "1", *COMMON])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("last.pt"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda(cfg: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["train", str(cfg), "--epochs", "1", *COMMON[:-3], "--device", "cuda"])
    assert rc == 2 and "CUDA is not available" in capsys.readouterr().err


def test_bad_images_and_labels_are_counted_in_the_epoch_summary(cfg: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    from zoo.data.export import write_yolo
    from zoo.data.shapes import ShapesConfig

    root = tmp_path / "ds"
    write_yolo(ShapesConfig(n_train=6, n_val=2, size=(64, 64)), root)
    (root / "images" / "train" / "000000.png").write_bytes(b"\x89PNG broken")
    with open(root / "labels" / "train" / "000001.txt", "a") as fh:
        fh.write("9 0.5 0.5 0.2 0.2\n")
    rc = main(["train", str(cfg), "--data", str(root / "data.yaml"), "--epochs", "1", "--no-plots", *COMMON])
    out = capsys.readouterr().out
    assert rc == 0
    summary = next(line for line in out.splitlines() if line.startswith("epoch 1/1"))
    assert "skipped 2 (1 bad label line, 1 corrupt image)" in summary


def test_classify_on_an_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from zoo.data.export import write_crops
    from zoo.data.shapes import ShapesConfig

    write_crops(ShapesConfig(n_train=10, n_val=5, size=(64, 64)), tmp_path / "crops")
    cfg = tmp_path / "cls.yaml"
    cfg.write_text("nc: 2\nbackbone:\n  - [-1, 1, Conv, [8, 3, 2]]\nhead:\n  - [-1, 1, ClassifierHead, [nc]]\n")
    rc = main(["train", str(cfg), "--data", str(tmp_path / "crops"), "--epochs", "1", "--imgsz", "32",
               "--batch", "5", "--workers", "0", "--device", "cpu", "--no-progress", "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "top1" in out and "runs/classify/train" in out

    rc = main(["val", str(cfg), "--data", str(tmp_path / "crops"), "--imgsz", "32", "--workers", "0",
               "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "top1" in out and "top5" in out and "(val, 5 images)" in out


def test_ultralytics_heads_train_with_their_tasks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A YOLOv8-style Detect (NMS in validation) and Ultralytics' Classify train from a YAML row each."""
    detect = tmp_path / "det.yaml"
    detect.write_text(TINY_DETECT.replace("v10Detect", "Detect"))
    rc = main(["train", str(detect), "--data", "shapes:n_train=8,n_val=4", "--epochs", "1", *COMMON, "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "mAP50" in out and "box" in out and "dfl" in out
    classify = tmp_path / "cls.yaml"
    classify.write_text("nc: 3\nbackbone:\n  - [-1, 1, Conv, [8, 3, 2]]\nhead:\n  - [-1, 1, Classify, [nc]]\n")
    rc = main(["train", str(classify), "--data", "shapes:n_train=12,n_val=6", "--epochs", "1", *COMMON, "--no-plots"])
    out = capsys.readouterr().out
    assert rc == 0 and "top1" in out and "runs/classify/train" in out
