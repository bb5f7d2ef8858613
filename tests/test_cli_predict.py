"""``zoo predict``: detection / classification overlays, SAM masks from prompts, one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_cfgs import TINY_CLASSIFIER, TINY_RTDETR
from zoo.cli import main
from zoo.model import Model


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(((48, 64), (64, 40))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_detection_overlays_for_a_folder(tmp_path: Path, images: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "tiny-rtdetr.yaml"
    cfg.write_text(TINY_RTDETR)
    out = tmp_path / "out"
    assert main(["predict", str(cfg), "--source", str(images), "--imgsz", "64", "--conf", "0.0",
                 "--out", str(out)]) == 0
    written = sorted(out.glob("*_pred.png"))
    assert [p.name for p in written] == ["im0_pred.png", "im1_pred.png"]
    # drawn at the original resolution, with boxes on it (it differs from the source image)
    for src, dst in zip(sorted(images.glob("*.png")), written):
        a, b = np.asarray(Image.open(src)), np.asarray(Image.open(dst))
        assert a.shape == b.shape and not np.array_equal(a, b)
    assert "detections" in capsys.readouterr().out


def test_detect_image_maps_boxes_back_to_the_original_image(tmp_path: Path) -> None:
    from zoo.commands.predict import detect_image

    cfg = tmp_path / "tiny-rtdetr.yaml"
    cfg.write_text(TINY_RTDETR)
    model = Model(str(cfg)).eval()
    image = np.zeros((40, 80, 3), np.uint8)
    dets = detect_image(model, image, 64, conf=0.0, max_det=7)
    assert dets.shape == (7, 6)
    assert (dets[:, [0, 2]] >= 0).all() and (dets[:, [0, 2]] <= 80).all()
    assert (dets[:, [1, 3]] >= 0).all() and (dets[:, [1, 3]] <= 40).all()


def test_classifier_writes_the_top_class(tmp_path: Path, images: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "tiny-cls.yaml"
    cfg.write_text(TINY_CLASSIFIER)
    out = tmp_path / "out"
    assert main(["predict", str(cfg), "--source", str(images / "im0.png"), "--imgsz", "32", "--out", str(out)]) == 0
    drawn = np.asarray(Image.open(out / "im0_pred.png"))
    assert drawn.shape[1] == 64 and drawn.shape[0] > 48  # label strip above the image
    assert "class" in capsys.readouterr().out


def test_sam_masks_from_a_box_prompt(tmp_path: Path, images: Path) -> None:
    cfg = Path(__file__).resolve().parents[1] / "cfg" / "sam-tinyvit.yaml"
    out = tmp_path / "out"
    assert main(["predict", str(cfg), "--source", str(images / "im0.png"), "--imgsz", "64",
                 "--box", "5,5,40,30", "--points", "20,20", "--out", str(out)]) == 0
    assert (out / "im0_sam.png").is_file()


def test_sam_without_prompts_is_a_one_line_error(tmp_path: Path, images: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = Path(__file__).resolve().parents[1] / "cfg" / "sam-tinyvit.yaml"
    assert main(["predict", str(cfg), "--source", str(images), "--imgsz", "64", "--out", str(tmp_path)]) == 2
    assert "needs prompts" in capsys.readouterr().err


def test_missing_source_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "tiny-cls.yaml"
    cfg.write_text(TINY_CLASSIFIER)
    assert main(["predict", str(cfg), "--source", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_reads_a_training_checkpoint(tmp_path: Path, images: Path) -> None:
    """A ``zoo train`` checkpoint carries its cfg, names and image size."""
    from zoo.engine.training_checkpoint import atomic_save, stamp

    cfg = tmp_path / "tiny-cls.yaml"
    cfg.write_text(TINY_CLASSIFIER)
    model = Model(str(cfg))
    ckpt = {**stamp(), "model_state": model.state_dict(), "yaml": dict(model.yaml), "scale": model.scale,
            "task": "classify", "names": ["a", "b", "c", "d"], "plugins": [], "epoch": 0, "epochs": 1,
            "best_fitness": 0.0, "metrics": {}, "args": {"imgsz": 32}, "train_state": model.state_dict(),
            "ema": None, "optimizer": {}, "schedule": {}, "scaler": None, "rng": {}}
    path = tmp_path / "last.pt"
    atomic_save(ckpt, path)
    out = tmp_path / "out"
    assert main(["predict", str(path), "--source", str(images / "im1.png"), "--out", str(out)]) == 0
    assert (out / "im1_pred.png").is_file()
