"""Letterbox / flips / colour jitter, the seeded sampler and DataLoader batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data import (AugmentConfig, ClassificationDataset, ClassifyAugment, DetectionDataset, SeededSampler,
                      ShapesConfig, ShapesCropSource, ShapesSource, build_dataloader, collate_classification,
                      collate_detection)
from zoo.data.transforms import colour_jitter, flip_horizontal, letterbox

CFG = ShapesConfig(seed=0, n_train=10, n_val=4, size=(48, 96))


def test_letterbox_centres_and_maps_boxes_and_masks() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    img[10:20, 30:60] = 255
    masks = np.zeros((1, 50, 100), bool)
    masks[0, 10:20, 30:60] = True
    out, boxes, out_masks, place, keep = letterbox(img, np.array([[30, 10, 60, 20]], np.float32), masks, 64)
    assert out.shape == (64, 64, 3) and keep.tolist() == [0]
    assert place.ratio == pytest.approx(0.64) and place.pad_x == 0 and place.pad_y == 16
    np.testing.assert_allclose(boxes, [[19.2, 22.4, 38.4, 28.8]], atol=1e-4)
    assert out[0, 0].tolist() == [114, 114, 114]  # padding
    ys, xs = np.nonzero(out_masks[0])
    assert abs(xs.min() - 19.2) <= 1 and abs(ys.max() + 1 - 28.8) <= 1


def test_random_scale_drops_boxes_pushed_out() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64, 3), np.uint8)
    boxes = np.array([[0, 0, 4, 4], [28, 28, 36, 36]], np.float32)
    for _ in range(20):
        _, out_boxes, _, _, keep = letterbox(img, boxes, None, 64, rng=rng, scale=0.5)
        assert ((out_boxes >= 0) & (out_boxes <= 64)).all()
        assert len(out_boxes) == len(keep) and set(keep.tolist()) <= {0, 1}


def test_flip_and_colour_jitter() -> None:
    img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    flipped, boxes, _ = flip_horizontal(img, np.array([[0, 0, 1, 2]], np.float32), None)
    np.testing.assert_array_equal(flipped[:, 0], img[:, 3])
    assert boxes.tolist() == [[3, 0, 4, 2]]
    grey = np.full((4, 4, 3), 100, np.uint8)
    out = colour_jitter(grey, np.random.default_rng(0), 0.5, 0.0, 0.0)
    assert np.abs(out.astype(int) - 100).max() <= 1  # hue rotation leaves grey alone
    out = colour_jitter(grey, np.random.default_rng(0), 0.0, 0.0, 0.4)
    assert len(np.unique(out)) == 1 and out[0, 0, 0] != 100


def test_sampler_is_seeded_and_splits_ranks() -> None:
    a = list(SeededSampler(10, seed=1))
    assert a == list(SeededSampler(10, seed=1))
    s = SeededSampler(10, seed=1)
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in a]
    ranks = [list(SeededSampler(10, seed=1, rank=r, world=3)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)
    seen = {i for r in ranks for i, _ in r}
    assert seen == set(range(10))
    # The seed of an item does not depend on the rank that draws it.
    seeds = dict(a)
    assert all(seeds[i] == sd for r in ranks for i, sd in r)


def test_detection_batches_same_with_and_without_workers() -> None:
    ds = DetectionDataset(ShapesSource(CFG, "train"), 64, AugmentConfig(), with_masks=True)
    b0 = next(iter(build_dataloader(ds, 4, collate_detection, shuffle=True, workers=0, seed=5)))
    b2 = next(iter(build_dataloader(ds, 4, collate_detection, shuffle=True, workers=2, seed=5)))
    assert b0["img"].shape == (4, 3, 64, 64) and b0["img"].dtype == torch.uint8
    for key in ("img", "cls", "boxes", "batch_idx"):
        assert torch.equal(b0[key], b2[key]), key
    assert len(b0["masks"]) == 4 and b0["batch_idx"].max() <= 3
    assert ((b0["boxes"] >= 0) & (b0["boxes"] <= 64)).all()


def test_val_items_are_unaugmented_and_deterministic() -> None:
    ds = DetectionDataset(ShapesSource(CFG, "val"), 96)
    a, b = ds[(0, 1)], ds[(0, 2)]
    assert torch.equal(a["img"], b["img"]) and a["placement"] == (1.0, 0.0, 24.0)
    with pytest.raises(ValueError, match="multiple of 32"):
        DetectionDataset(ShapesSource(CFG, "val"), 50)


def test_classification_loader() -> None:
    ds = ClassificationDataset(ShapesCropSource(CFG, "train"), 32, ClassifyAugment())
    batch = next(iter(build_dataloader(ds, 5, collate_classification, shuffle=True, workers=0)))
    assert batch["img"].shape == (5, 3, 32, 32) and batch["cls"].shape == (5,) and batch["bad"] == 0
    val = ClassificationDataset(ShapesCropSource(CFG, "val"), 32)
    assert torch.equal(val[0]["img"], val[(0, 9)]["img"])


def test_unreadable_image_at_load_time_is_replaced_and_counted() -> None:
    class Flaky(ShapesSource):
        def load(self, index: int, with_masks: bool = False):
            if index == 1:
                raise OSError("truncated file")
            return super().load(index, with_masks)

    ds = DetectionDataset(Flaky(CFG, "train"), 64)
    item = ds[1]
    assert item["bad"] == 1 and item["path"].endswith("000002")
    assert ds.source.problems.counts["corrupt image"] == 1
