"""Box formats and overlap measures on tensors whose coordinates lie along one dim (the last by default).

``xyxy`` is x1, y1, x2, y2 (corners); ``xywh`` is centre x, centre y, width, height (what DETR-style
papers call cxcywh). Every box conversion and overlap measure in zoo lives here.

CIoU: Zheng et al., "Distance-IoU Loss", arXiv:1911.08287. GIoU: Rezatofighi et al.,
"Generalized Intersection over Union", arXiv:1902.09630.
"""
from __future__ import annotations

import math

import torch

__all__ = ["xywh_to_xyxy", "xyxy_to_xywh", "corners_to_xywh", "box_area", "pairwise_iou", "elementwise_iou",
           "ciou", "giou", "pairwise_giou"]


def xywh_to_xyxy(b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Centre + size -> corners along ``dim``: ``(..., 4) -> (..., 4)``. Columns past the fourth are dropped."""
    xy, wh = b.narrow(dim, 0, 2), b.narrow(dim, 2, 2)
    return torch.cat((xy - wh / 2, xy + wh / 2), dim)


def corners_to_xywh(x1y1: torch.Tensor, x2y2: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Top-left and bottom-right points -> centre + size, concatenated along ``dim``.

    Takes the two corners separately so a decoder that has just computed them (``dist2bbox``) need
    not concatenate them first.
    """
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


def xyxy_to_xywh(b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Corners -> centre + size along ``dim``: ``(..., 4) -> (..., 4)``. Columns past the fourth are dropped."""
    return corners_to_xywh(b.narrow(dim, 0, 2), b.narrow(dim, 2, 2), dim)


def box_area(b: torch.Tensor) -> torch.Tensor:
    """Area of ``(..., 4)`` xyxy boxes, zero for inverted ones: ``-> (...)``."""
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
    """Top-left and bottom-right corners of the smallest box holding both."""
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
