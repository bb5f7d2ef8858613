"""Greedy non-maximum suppression on xyxy boxes, pure torch (no torchvision).

``nms`` sorts by score (stable: equal scores keep their input order), builds the pairwise IoU matrix
once, and solves greedy NMS as a fixed point: box ``i`` is kept iff no *kept* box ranked before it
overlaps it by more than ``iou_thresh``. Starting from "all kept", each round is one vectorised
``(N, N)`` boolean reduction, and after round ``r`` the first ``r`` ranks are final, so it stops at the
exact greedy answer (usually after a few rounds, at most ``N``).

``batched_nms`` runs NMS independently per class by shifting each class's boxes into a disjoint
region of the plane (the coordinate-offset trick), so one ``nms`` call serves every class.
"""
from __future__ import annotations

import torch

from zoo.ops.boxes import pairwise_iou

__all__ = ["nms", "batched_nms"]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Indices (long, by descending score) of the boxes greedy NMS keeps.

    Args:
        boxes: ``(N, 4)`` x1, y1, x2, y2.
        scores: ``(N,)``; ties are broken by input order (the earlier box ranks first).
        iou_thresh: a box is dropped when its IoU with a kept higher-ranked box is ``> iou_thresh``.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms needs boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    # over[j, i]: ranked box j (earlier) would suppress ranked box i (later)
    over = (pairwise_iou(ranked, ranked) > iou_thresh).triu_(diagonal=1)
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for _ in range(n):
        new = ~(over & keep[:, None]).any(dim=0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """NMS within each class: indices (by descending score) of the kept ``(N, 4)`` xyxy boxes.

    Each class ``c`` is moved by ``c * span`` on both axes, ``span`` exceeding the extent of all
    boxes, so boxes of different classes never overlap and a single ``nms`` does every class.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if classes.shape != boxes.shape[:1]:
        raise ValueError(f"batched_nms needs one class per box, got {tuple(classes.shape)} for {boxes.shape[0]} boxes")
    b = boxes.to(torch.float64) if not boxes.is_floating_point() else boxes
    span = b.max() - b.min() + 1
    _, cls = torch.unique(classes, return_inverse=True)  # dense 0..C-1 keeps offsets small
    shifted = b + (cls.to(b.dtype) * span)[:, None]
    return nms(shifted, scores, iou_thresh)
