"""COCO mAP against pycocotools on the same predictions; mIoU and top-k."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from zoo.engine.metrics import DetectionMetrics, MaskIoUMeter, TopKAccuracy, box_iou_np


def _random_scene(rng: np.random.Generator, n_images: int, nc: int):
    """Ground truth and noisy predictions: jittered true boxes, duplicates, false positives."""
    scenes = []
    for i in range(n_images):
        n_gt = int(rng.integers(0, 8)) if i % 7 else 0  # a few images without objects
        xy = rng.uniform(0, 200, (n_gt, 2))
        wh = rng.uniform(5, 80, (n_gt, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        gt_cls = rng.integers(0, nc - 1, n_gt)  # the last class never has ground truth
        keep = rng.random(n_gt) < 0.8
        pred = gt[keep] + rng.normal(0, 4, (int(keep.sum()), 4))
        pred_cls = np.where(rng.random(int(keep.sum())) < 0.9, gt_cls[keep], rng.integers(0, nc, int(keep.sum())))
        n_fp = int(rng.integers(0, 6))
        fxy = rng.uniform(0, 200, (n_fp, 2))
        fp = np.concatenate([fxy, fxy + rng.uniform(5, 80, (n_fp, 2))], 1)
        dup = pred[: 2] + rng.normal(0, 2, pred[:2].shape)
        boxes = np.concatenate([pred, fp, dup])
        cls = np.concatenate([pred_cls, rng.integers(0, nc, n_fp), pred_cls[:2]])
        scores = rng.uniform(0.01, 1.0, len(boxes))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scenes.append((boxes, scores, cls, gt, gt_cls))
    return scenes


def _pycocotools_stats(scenes, nc: int) -> np.ndarray:
    coco_mod = pytest.importorskip("pycocotools.coco")
    eval_mod = pytest.importorskip("pycocotools.cocoeval")
    images, anns, dets = [], [], []
    for i, (boxes, scores, cls, gt, gt_cls) in enumerate(scenes, 1):
        images.append({"id": i, "width": 300, "height": 300})
        for b, c in zip(gt, gt_cls):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
        for b, s, c in zip(boxes, scores, cls):
            dets.append({"image_id": i, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    gt_api = coco_mod.COCO()
    gt_api.dataset = {"images": images, "annotations": anns, "categories": [{"id": c + 1} for c in range(nc)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api.createIndex()
        dt_api = gt_api.loadRes(dets)
        ev = eval_mod.COCOeval(gt_api, dt_api, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_map_matches_pycocotools(seed: int) -> None:
    nc = 4
    scenes = _random_scene(np.random.default_rng(seed), 40, nc)
    ref = _pycocotools_stats(scenes, nc)
    metrics = DetectionMetrics(nc)
    for boxes, scores, cls, gt, gt_cls in scenes:
        metrics.update(boxes, scores, cls, gt, gt_cls)
    ours = metrics.compute()
    assert 0.2 < ours["mAP50"] < 0.95  # a scene where matching actually matters
    assert ours["mAP50-95"] == pytest.approx(ref[0], abs=1e-3)
    assert ours["mAP50"] == pytest.approx(ref[1], abs=1e-3)
    assert ours["mAP75"] == pytest.approx(ref[2], abs=1e-3)


def test_perfect_and_empty_predictions() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], float)
    m = DetectionMetrics(2)
    m.update(gt, np.array([0.9, 0.8]), np.array([0, 1]), gt, np.array([0, 1]))
    assert m.compute()["mAP50-95"] == pytest.approx(1.0)
    m = DetectionMetrics(2)
    m.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), gt, np.array([0, 1]))
    assert m.compute() == {"mAP50-95": 0.0, "mAP50": 0.0, "mAP75": 0.0}
    assert np.isnan(DetectionMetrics(3).per_class_ap50()).all()


def test_matching_is_greedy_by_score() -> None:
    gt = np.array([[0, 0, 10, 10]], float)
    m = DetectionMetrics(1)
    # The higher-scored box overlaps 0.6, the lower one exactly: at IoU 0.5 the first takes the object
    # and the exact one is a false positive; at 0.75 only the exact one matches, after one miss.
    m.update(np.array([[0, 0, 10, 6], [0, 0, 10, 10]]), np.array([0.9, 0.5]), np.array([0, 0]), gt, np.array([0]))
    out = m.compute()
    assert out["mAP50"] == pytest.approx(1.0)
    assert out["mAP75"] == pytest.approx(0.5)


def test_box_iou() -> None:
    iou = box_iou_np(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [5, 5, 6, 6]]))
    np.testing.assert_allclose(iou, [[1 / 7, 0.0]])


def test_mask_iou_per_key() -> None:
    meter = MaskIoUMeter()
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2] = True
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    b[0, :1] = True
    ious = meter.update(a, b, "box")
    assert ious.tolist() == [0.5, 1.0]
    meter.update(a[:1], a[:1], "point")
    out = meter.compute()
    assert out["mIoU/box"] == 0.75 and out["mIoU/point"] == 1.0 and out["mIoU"] == pytest.approx(2.5 / 3)


def test_topk() -> None:
    acc = TopKAccuracy((1, 2))
    acc.update(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]]), torch.tensor([1, 2, 0]))
    assert acc.compute() == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}
