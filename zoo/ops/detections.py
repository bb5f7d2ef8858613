"""Decoded head outputs -> detections ``(B, K, 6)``: ``x1, y1, x2, y2, score, class`` rows, best first.

Two ways, for the two kinds of YOLO head:

* :func:`topk_detections`: NMS-free heads (YOLOv10, YOLO26 and other end-to-end ``Detect`` heads),
  whose one-to-one branch already predicts one box per object;
* :func:`nms_detections`: one-to-many heads (YOLOv3-v9, YOLO11/12), which predict several boxes per
  object and need per-class non-maximum suppression (:func:`zoo.ops.nms.batched_nms`).

Both take ``preds (B, A, 4 + nc)``: boxes ``x, y, w, h`` in pixels then class probabilities.
"""
from __future__ import annotations

import torch

from zoo.ops.boxes import xywh_to_xyxy
from zoo.ops.nms import batched_nms

__all__ = ["topk_detections", "nms_detections", "DEFAULT_NMS_IOU", "DEFAULT_NMS_CONF", "DEFAULT_MAX_CANDIDATES"]

DEFAULT_NMS_IOU = 0.7  # Ultralytics' default for val and predict
DEFAULT_NMS_CONF = 0.001  # (anchor, class) pairs scoring at most this never reach NMS (the mAP convention)
# NMS compares every pair of candidates, so their number is capped (the best-scoring ones are kept);
# 3000^2 IoUs are ~36 MB, and with max_det 300 the pairs below the cap's score rarely survive anyway
DEFAULT_MAX_CANDIDATES = 3000


def topk_detections(preds: torch.Tensor, max_det: int = 300, nc: int | None = None) -> torch.Tensor:
    """NMS-free top-k: ``(B, A, 4+nc)`` -> ``(B, min(max_det, A*nc), 6)``.

    First the ``max_det`` anchors with the highest class score are kept, then the best ``max_det``
    (anchor, class) pairs among them, so one anchor may report two classes as a one-to-one head allows.
    """
    b, a, c = preds.shape
    nc = c - 4 if nc is None else nc
    boxes, scores = preds[..., :4], preds[..., 4:4 + nc]
    k = min(max_det, a)
    best_anchor = scores.amax(-1).topk(k, dim=-1).indices  # (B, k)
    boxes = boxes.gather(1, best_anchor[..., None].expand(-1, -1, 4))
    scores = scores.gather(1, best_anchor[..., None].expand(-1, -1, nc))
    top_scores, flat = scores.flatten(1).topk(min(max_det, k * nc), dim=-1)
    anchor_idx, cls = flat // nc, flat % nc
    xywh = boxes.gather(1, anchor_idx[..., None].expand(-1, -1, 4))
    xyxy = xywh_to_xyxy(xywh)
    return torch.cat((xyxy, top_scores[..., None], cls[..., None].to(xyxy.dtype)), -1)


def nms_detections(preds: torch.Tensor, max_det: int = 300, iou: float = DEFAULT_NMS_IOU,
                   conf: float = DEFAULT_NMS_CONF, max_candidates: int = DEFAULT_MAX_CANDIDATES) -> torch.Tensor:
    """Per-class NMS: ``(B, A, 4+nc)`` -> ``(B, K, 6)``, ``K`` the most any image keeps (``<= max_det``).

    Every (anchor, class) pair scoring above ``conf`` is a candidate (so one box may be reported for
    two classes, as in COCO-style validation); the best ``max_candidates`` per image go through
    :func:`batched_nms` with threshold ``iou``. Images keeping fewer than ``K`` rows are padded with
    all-zero rows (score 0, below any threshold a caller filters with ``score > conf``). Meta tensors
    (a model sized or FLOP-counted without data) hold no scores to keep: ``(B, 0, 6)``.
    """
    b, a, c = preds.shape
    nc = c - 4
    if preds.is_meta:
        return preds.new_zeros(b, 0, 6)
    kept: list[torch.Tensor] = []
    for image in preds:
        flat = image[:, 4:].flatten()
        candidates = (flat > conf).nonzero().squeeze(1)
        scores = flat[candidates]
        if scores.numel() > max_candidates:
            scores, best = scores.topk(max_candidates)
            candidates = candidates[best]
        anchor, cls = candidates // nc, candidates % nc
        boxes = xywh_to_xyxy(image[anchor, :4])
        keep = batched_nms(boxes, scores, cls, iou)[:max_det]
        kept.append(torch.cat((boxes[keep], scores[keep, None], cls[keep, None].to(boxes.dtype)), 1))
    k = max((len(d) for d in kept), default=0)
    out = preds.new_zeros(b, k, 6)
    for i, d in enumerate(kept):
        out[i, :len(d)] = d
    return out
