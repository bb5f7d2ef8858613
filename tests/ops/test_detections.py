"""Detections from decoded YOLO outputs: NMS (per class, multi-label, capped, padded) and the NMS-free top-k."""
from __future__ import annotations

import torch

from zoo.ops.detections import nms_detections, topk_detections


def _preds(rows: list[tuple[float, float, float, float, list[float]]]) -> torch.Tensor:
    """One image's anchors: (x, y, w, h, class probabilities) -> (1, A, 4 + nc)."""
    return torch.tensor([[x, y, w, h, *p] for x, y, w, h, p in rows])[None]


def test_nms_suppresses_within_a_class_only_and_keeps_two_labels_of_one_box():
    preds = _preds([
        (50, 50, 20, 20, [0.9, 0.0]),   # kept
        (51, 50, 20, 20, [0.8, 0.6]),   # class 0: overlaps the first (IoU ~0.9) -> dropped; class 1: kept
        (150, 50, 20, 20, [0.7, 0.0]),  # far away: kept
        (10, 10, 4, 4, [0.0005, 0.0]),  # under the candidate threshold
    ])
    dets = nms_detections(preds, max_det=10, iou=0.7, conf=0.001)
    assert dets.shape == (1, 3, 6)
    assert dets[0, :, 4].tolist() == [0.8999999761581421, 0.699999988079071, 0.6000000238418579]
    assert dets[0, :, 5].tolist() == [0.0, 0.0, 1.0]
    assert torch.allclose(dets[0, 0, :4], torch.tensor([40.0, 40.0, 60.0, 60.0]))


def test_nms_pads_the_batch_caps_candidates_and_max_det():
    empty = _preds([(50, 50, 20, 20, [0.0])])
    busy = _preds([(10.0 * i, 10, 5, 5, [0.5 + i / 100]) for i in range(20)])  # 20 separate boxes
    dets = nms_detections(torch.cat((empty, busy[:, :1])), max_det=5)
    assert dets.shape == (2, 1, 6) and dets[0].abs().sum() == 0  # padding rows: all zero, score 0
    assert nms_detections(busy, max_det=5).shape == (1, 5, 6)
    capped = nms_detections(busy, max_det=50, max_candidates=7)
    assert capped.shape == (1, 7, 6) and capped[0, -1, 4] > 0.5 + 12 / 100  # the best 7 candidates only


def test_topk_is_the_nms_free_selection():
    preds = _preds([(50, 50, 20, 20, [0.1, 0.9]), (80, 80, 10, 10, [0.8, 0.7])])
    dets = topk_detections(preds, max_det=3)
    assert dets[0, :, 4].tolist() == [0.8999999761581421, 0.800000011920929, 0.699999988079071]
    assert dets[0, :, 5].tolist() == [1.0, 0.0, 1.0]


def test_meta_tensors_give_no_rows():
    assert nms_detections(torch.empty(2, 10, 7, device="meta")).shape == (2, 0, 6)
