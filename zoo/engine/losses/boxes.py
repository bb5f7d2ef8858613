"""Box overlap measures used by the losses and assigners, on x1, y1, x2, y2 tensors.

CIoU: Zheng et al., "Distance-IoU Loss", arXiv:1911.08287. GIoU: Rezatofighi et al.,
"Generalized Intersection over Union", arXiv:1902.09630.
"""
from __future__ import annotations

import math

import torch

__all__ = ["box_area", "pairwise_iou", "elementwise_iou", "ciou", "giou", "pairwise_giou", "xywh_to_xyxy",
           "xyxy_to_xywh"]


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    xy, wh = b[..., :2], b[..., 2:4]
    return torch.cat((xy - wh / 2, xy + wh / 2), -1)


def xyxy_to_xywh(b: torch.Tensor) -> torch.Tensor:
    return torch.cat(((b[..., :2] + b[..., 2:4]) / 2, b[..., 2:4] - b[..., :2]), -1)


def box_area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _inter_union(a: torch.Tensor, b: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union of boxes that broadcast against each other: (...) each."""
    wh = (torch.minimum(a[..., 2:4], b[..., 2:4]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, box_area(a) + box_area(b) - inter + eps


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(N, 4) x (M, 4) -> (N, M) IoU."""
    inter, union = _inter_union(a[:, None], b[None], eps)
    return inter / union


def elementwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of boxes that broadcast: (..., 4) x (..., 4) -> (...)."""
    inter, union = _inter_union(a, b, eps)
    return inter / union


def _enclosing(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:4], b[..., 2:4])
    return lt, rb


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of broadcastable (..., 4) boxes: IoU minus the normalised centre distance and an
    aspect-ratio consistency term. Range (-1.5, 1]."""
    inter, union = _inter_union(a, b, eps)
    iou = inter / union
    lt, rb = _enclosing(a, b)
    diag2 = ((rb - lt) ** 2).sum(-1) + eps  # squared diagonal of the enclosing box
    centre2 = (((a[..., :2] + a[..., 2:4]) - (b[..., :2] + b[..., 2:4])) ** 2).sum(-1) / 4
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1] + eps
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1] + eps
    v = (4 / math.pi**2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
    with torch.no_grad():  # the trade-off weight is a constant in the paper's gradient
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre2 / diag2 + v * alpha)


def giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalised IoU of broadcastable (..., 4) boxes. Range (-1, 1]."""
    inter, union = _inter_union(a, b, eps)
    lt, rb = _enclosing(a, b)
    hull = ((rb - lt).clamp(min=0)).prod(-1) + eps
    return inter / union - (hull - union) / hull


def pairwise_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(N, 4) x (M, 4) -> (N, M) GIoU (for matching costs)."""
    return giou(a[:, None], b[None], eps)
