"""SamAutomaticMaskGenerator: the point grid, IoU / stability filters and NMS on synthetic masks from a
fake predictor (deterministic), a real random-weight SAM at a small input size, and ``--everything``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import Model
from zoo.automatic_masks import (
    SamAutomaticMaskGenerator, masks_to_boxes, point_grid, remove_small_regions, stability_score,
)
from zoo.cli import main
from zoo.sam_predictor import SamPredictor

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg" / "sam-tinyvit.yaml"
H, W = 40, 60
KEYS = {"segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords"}


class FakePredictor(SamPredictor):
    """Three candidates per point, logits already at image size: the half of the image holding the point
    (sharp, IoU 0.95), the same half with soft edges (unstable, IoU 0.99) and the whole image (IoU 0.5)."""

    def __init__(self) -> None:  # no model
        self.mask_threshold = 0.0
        self.calls = 0
        self.reset_image()

    def set_image(self, image: np.ndarray) -> None:
        self.original_size = image.shape[:2]
        self.features = torch.zeros(1)

    def prompt_logits(self, point_coords=None, point_labels=None, boxes=None, mask_inputs=None,
                      multimask_output=True):
        self.calls += 1
        assert multimask_output and point_coords.shape[1:] == (1, 2) and (point_labels == 1).all()
        xs = torch.arange(W, dtype=torch.float32)
        out, ious = [], []
        for x, _ in point_coords[:, 0]:
            left = x < W / 2
            side = (xs < W / 2) if left else (xs >= W / 2)
            sharp = torch.where(side, 10.0, -10.0).expand(H, W)
            edge = W / 2 - 0.5
            soft = ((edge - xs) if left else (xs - edge)).expand(H, W) * 0.5
            whole = torch.full((H, W), 10.0)
            out.append(torch.stack([sharp, soft, whole]))
            ious.append(torch.tensor([0.95, 0.99, 0.5]))
        return torch.stack(out), torch.stack(ious)

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        return low_res


def test_point_grid() -> None:
    g = point_grid(4)
    assert g.shape == (16, 2)
    np.testing.assert_allclose(np.unique(g[:, 0]), [0.125, 0.375, 0.625, 0.875])
    assert np.array_equal(g[:4, 1], np.full(4, 0.125))  # x varies fastest
    gen = SamAutomaticMaskGenerator(FakePredictor(), points_per_side=3)
    pts = gen.grid(30, 60)
    assert pts.shape == (9, 2) and pts[0].tolist() == [10.0, 5.0] and pts[-1].tolist() == [50.0, 25.0]
    with pytest.raises(ValueError):
        point_grid(0)


def test_stability_score_and_boxes() -> None:
    logits = torch.tensor([[[5.0, 0.5, -0.5, -5.0]]])
    assert stability_score(logits, 0.0, 1.0).item() == pytest.approx(1 / 3)
    assert stability_score(torch.full((1, 2, 2), -9.0), 0.0, 1.0).item() == 0.0
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    assert masks_to_boxes(m).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0]]


def test_filters_and_nms_on_synthetic_masks() -> None:
    fake = FakePredictor()
    gen = SamAutomaticMaskGenerator(fake, points_per_side=4, points_per_batch=5)
    found = gen.generate(np.zeros((H, W, 3), np.uint8))
    assert fake.calls == 4  # 16 points in batches of 5
    # the whole image fails IoU, the soft halves fail stability, 8 copies of each half collapse by NMS
    assert len(found) == 2 and all(set(f) == KEYS for f in found)
    assert sorted(f["bbox"][0] for f in found) == [0, W // 2]
    for f in found:
        assert f["segmentation"].shape == (H, W) and f["segmentation"].dtype == bool
        assert f["area"] == H * W // 2 and f["bbox"][2:] == [W // 2, H]
        assert f["predicted_iou"] == pytest.approx(0.95) and f["stability_score"] == 1.0
        x = f["point_coords"][0][0]
        assert (x < W / 2) == (f["bbox"][0] == 0)
    # loosening stability lets the soft halves in; they duplicate the sharp ones and win on IoU
    loose = SamAutomaticMaskGenerator(fake, points_per_side=4, stability_score_thresh=0.0).generate(
        np.zeros((H, W, 3), np.uint8))
    assert len(loose) == 2 and all(f["predicted_iou"] == pytest.approx(0.99) for f in loose)
    # no NMS (threshold 1): every surviving candidate is returned; strict IoU: nothing
    assert len(SamAutomaticMaskGenerator(fake, points_per_side=4, box_nms_thresh=1.0).generate(
        np.zeros((H, W, 3), np.uint8))) == 16
    assert SamAutomaticMaskGenerator(fake, points_per_side=2, pred_iou_thresh=0.999).generate(
        np.zeros((H, W, 3), np.uint8)) == []


def test_remove_small_regions() -> None:
    m = torch.zeros(12, 12, dtype=torch.bool)
    m[1:9, 1:9] = True
    m[4, 4] = False  # a 1-pixel hole
    m[10:12, 10:12] = True  # a 4-pixel island (diagonal-touching counts as connected: not here)
    filled, changed = remove_small_regions(m, 5, "holes")
    assert changed and filled[4, 4] and filled.sum() == m.sum() + 1
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[10:, 10:].any() and cleaned[1:9, 1:9].all()
    assert remove_small_regions(cleaned, 5, "islands") == (cleaned, False)


@pytest.fixture(scope="module")
def sam_model() -> Model:
    torch.manual_seed(0)
    return Model(CFG).eval()


def test_random_weight_sam_end_to_end(sam_model: Model) -> None:
    assert zoo.SamAutomaticMaskGenerator is SamAutomaticMaskGenerator
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    gen = SamAutomaticMaskGenerator(SamPredictor(sam_model, input_size=64), points_per_side=3, points_per_batch=4,
                                    pred_iou_thresh=-1e9, stability_score_thresh=0.0, min_mask_region_area=3)
    found = gen.generate(image)
    for f in found:
        assert set(f) == KEYS and f["segmentation"].shape == (50, 70) and f["area"] == f["segmentation"].sum() > 0
        x, y, w, h = f["bbox"]
        assert w > 0 and h > 0 and x + w <= 70 and y + h <= 50
    ious = [f["predicted_iou"] for f in found]
    assert ious == sorted(ious, reverse=True)


def test_cli_everything_writes_overlay_and_json(tmp_path: Path) -> None:
    src = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "out"
    assert main(["predict", str(CFG), str(src), "--imgsz", "64", "--everything", "--points-per-side", "2",
                 "--save-json", "--out", str(out)]) == 0
    assert (out / "im_sam.png").is_file()
    record = json.loads((out / "predictions.json").read_text())["images"][0]
    assert isinstance(record["masks"], list)
    for m in record["masks"]:
        assert {"area", "bbox", "predicted_iou", "stability_score", "point_coords"} <= set(m)


def test_cli_everything_refuses_prompts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "im.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(src)
    assert main(["predict", str(CFG), str(src), "--imgsz", "64", "--everything", "--points", "3,3",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--everything" in capsys.readouterr().err
