"""Anchor points of dense detection heads and the box <-> distance encoding around them.

A dense head (YOLOv8/v10) predicts, at every cell centre of every level, the distances from that
point to the box's left, top, right and bottom edges. Each distance is a ``reg_max``-bin
distribution whose expectation is the distance (Li et al., "Generalized Focal Loss",
arXiv:2006.04388). The head's inference decode and the training loss both go through these
functions, so they cannot drift apart.
"""
from __future__ import annotations

from typing import Sequence

import torch

from zoo.ops.boxes import corners_to_xywh

__all__ = ["grid_anchors", "make_anchors", "dist2bbox", "box_to_distances", "dfl_expectation"]


def grid_anchors(shapes: Sequence[tuple[int, int]], strides: Sequence[float] | torch.Tensor,
                 device: torch.device, dtype: torch.dtype, offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of levels of sizes ``shapes`` [(H, W), ...]: ``(A, 2)`` x, y in cells of their own
    level (``offset`` 0.5 = the centre), row-major per level, levels in order; and each anchor's
    stride ``(A, 1)``. Multiply the two for pixels.

    Strides given as a tensor (a head's ``stride`` buffer) stay tensor ops: no Python number is read
    from it, so ``torch.export`` can trace this with the buffer unknown and sizes symbolic."""
    level_strides = torch.as_tensor(strides, dtype=dtype, device=device).reshape(-1)
    points, steps = [], []
    for level, (h, w) in enumerate(shapes):
        xs = torch.arange(w, device=device, dtype=dtype) + offset
        ys = torch.arange(h, device=device, dtype=dtype) + offset
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).reshape(-1, 2))
        steps.append(level_strides[level].expand(h * w, 1))
    return torch.cat(points), torch.cat(steps)


def make_anchors(feats: Sequence[torch.Tensor], strides: Sequence[float] | torch.Tensor,
                 offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`grid_anchors` for the feature maps themselves (Ultralytics' signature): their sizes,
    device and dtype (the first map's; a head's levels share them)."""
    return grid_anchors([tuple(f.shape[-2:]) for f in feats], strides, feats[0].device, feats[0].dtype, offset)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """Left, top, right, bottom distances from anchor points -> boxes along ``dim``: centre + size
    (``xywh=True``) or corners. Distances and points share units (cells or pixels)."""
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return corners_to_xywh(x1y1, x2y2, dim)
    return torch.cat((x1y1, x2y2), dim)


def box_to_distances(anchor_points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The inverse of ``dist2bbox(..., xywh=False)``: broadcastable ``(..., 2)`` points and ``(..., 4)``
    xyxy boxes -> ``(..., 4)`` left, top, right, bottom distances (all positive iff the point is inside)."""
    return torch.cat((anchor_points - boxes[..., :2], boxes[..., 2:4] - anchor_points), -1)


def dfl_expectation(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected distance of each side: ``(..., 4 * R)`` bin logits (side-major, bins innermost) and the
    ``(R,)`` bin values ``0 .. R-1`` -> ``(..., 4)``. The softmax runs over contiguous bins when the
    logits are anchor-major, which is why both the head and the loss keep that layout."""
    return logits.unflatten(-1, (4, bins.numel())).softmax(-1) @ bins.to(logits.dtype)
