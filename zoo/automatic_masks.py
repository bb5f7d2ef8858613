"""``SamAutomaticMaskGenerator``: Segment Anything's "segment everything" on a zoo SAM model.

Segment Anything, Kirillov et al., arXiv:2304.02643 (Sec. 7.1 and App. B, automatic mask generation).

The image is embedded once; a regular ``points_per_side x points_per_side`` grid of single foreground
points is then decoded in batches of ``points_per_batch`` prompts, each giving SAM's three candidate
masks. A candidate survives when

- its predicted IoU is ``> pred_iou_thresh``;
- its stability score -- the IoU between the mask binarised at ``mask_threshold + offset`` and at
  ``mask_threshold - offset`` (the first is inside the second) -- is ``>= stability_score_thresh``;
- it is not empty.

Duplicates are then removed by box NMS on the masks' bounding boxes, ranked by predicted IoU. With
``min_mask_region_area > 0`` each mask loses its disconnected islands and fills its holes smaller than
that many pixels (8-connected), and NMS runs again on the cleaned masks.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.ops.nms import nms
from zoo.sam_predictor import SamPredictor

__all__ = ["SamAutomaticMaskGenerator", "point_grid", "stability_score", "masks_to_boxes", "remove_small_regions"]


def point_grid(points_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` x, y cell centres of a regular grid on the unit square (row-major: x varies fastest)."""
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    offset = 1.0 / (2 * points_per_side)
    side = np.linspace(offset, 1.0 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """``(..., H, W)`` logits -> ``(...)`` IoU of the masks at ``threshold + offset`` and ``- offset``
    (0 where both are empty)."""
    inter = (logits > mask_threshold + offset).flatten(-2).sum(-1, dtype=torch.int64)
    union = (logits > mask_threshold - offset).flatten(-2).sum(-1, dtype=torch.int64)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter, dtype=torch.float32))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` bool -> ``(N, 4)`` x1, y1, x2, y2 with exclusive x2 / y2 (zeros for empty masks)."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, device=masks.device)
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # (N, W), (N, H)

    def span(hit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(size, device=masks.device)
        first = torch.where(hit, idx, size).min(dim=1).values
        last = torch.where(hit, idx, -1).max(dim=1).values + 1
        empty = ~hit.any(dim=1)
        return first.masked_fill(empty, 0), last.masked_fill(empty, 0)

    x1, x2 = span(cols, w)
    y1, y2 = span(rows, h)
    return torch.stack([x1, y1, x2, y2], dim=1).float()


def _components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of an ``(H, W)`` bool mask (0 outside it), by max-label flooding."""
    h, w = mask.shape
    labels = torch.arange(1, h * w + 1, dtype=torch.float32, device=mask.device).view(1, 1, h, w) * mask
    inside = mask.view(1, 1, h, w)
    while True:
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * inside
        if torch.equal(grown, labels):
            return labels.view(h, w).long()
        labels = grown


def remove_small_regions(mask: torch.Tensor, area: int, mode: str) -> tuple[torch.Tensor, bool]:
    """Drop islands (``mode='islands'``) or fill holes (``'holes'``) under ``area`` pixels in an
    ``(H, W)`` bool mask; returns ``(mask, changed)``."""
    if mode not in ("islands", "holes"):
        raise ValueError(f"mode must be 'islands' or 'holes', got {mode!r}")
    holes = mode == "holes"
    region = ~mask if holes else mask
    labels = _components(region)
    ids, counts = torch.unique(labels[labels > 0], return_counts=True)
    small = ids[counts < area]
    if holes:  # a "hole" touching the border is background, not a hole
        border = torch.cat([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).unique()
        small = small[~torch.isin(small, border)]
    if len(small) == 0:
        return mask, False
    hit = torch.isin(labels, small)
    return (mask | hit) if holes else (mask & ~hit), True


class SamAutomaticMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts.

    Args:
        model_or_predictor: a SAM :class:`zoo.model.Model` or a :class:`~zoo.sam_predictor.SamPredictor`
            (reused as is, e.g. to keep its ``input_size``).
        points_per_side: the grid has ``points_per_side ** 2`` points.
        points_per_batch: prompts decoded together (memory vs speed; results do not depend on it).
        pred_iou_thresh: keep masks whose predicted IoU is above this.
        stability_score_thresh: keep masks whose stability score is at least this.
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: IoU above which the lower-scored of two mask boxes is dropped.
        min_mask_region_area: if > 0, remove islands and holes smaller than this (pixels).
    """

    def __init__(self, model_or_predictor: Any, points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 min_mask_region_area: int = 0) -> None:
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        self.predictor = (model_or_predictor if isinstance(model_or_predictor, SamPredictor)
                          else SamPredictor(model_or_predictor))
        self.points = point_grid(points_per_side)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.min_mask_region_area = min_mask_region_area

    def grid(self, height: int, width: int) -> np.ndarray:
        """The grid points ``(n*n, 2)`` x, y in pixels of an ``height x width`` image."""
        return self.points * np.array([width, height], dtype=np.float64)

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for an ``H x W x 3`` uint8 RGB image, by descending predicted IoU; each a dict with
        ``segmentation`` (H, W) bool, ``area`` (pixels), ``bbox`` [x, y, w, h], ``predicted_iou``,
        ``stability_score`` and ``point_coords`` ([[x, y]], the prompt that made it)."""
        p = self.predictor
        p.set_image(image)
        points = self.grid(*image.shape[:2])
        masks, ious, stabs, coords = [], [], [], []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start:start + self.points_per_batch]
            m, i, s, c = self._decode(batch)
            masks.append(m), ious.append(i), stabs.append(s), coords.append(c)
        mask = torch.cat(masks)
        iou, stab, coord = torch.cat(ious), torch.cat(stabs), np.concatenate(coords)
        keep = nms(masks_to_boxes(mask), iou, self.box_nms_thresh) if len(mask) else torch.zeros(0, dtype=torch.long)
        mask, iou, stab, coord = mask[keep], iou[keep], stab[keep], coord[keep.cpu().numpy()]
        if self.min_mask_region_area > 0 and len(mask):
            mask, iou, stab, coord = self._clean(mask, iou, stab, coord)
        boxes = masks_to_boxes(mask).round().long().cpu().tolist()
        areas = mask.flatten(1).sum(1).cpu().tolist()
        mask_np = mask.cpu().numpy()
        return [{"segmentation": mask_np[k], "area": int(areas[k]),
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "predicted_iou": float(iou[k]),
                 "stability_score": float(stab[k]), "point_coords": [[float(v) for v in coord[k]]]}
                for k, (x1, y1, x2, y2) in enumerate(boxes)]

    def _decode(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        """One batch of points -> the surviving masks (bool, original size), their IoU, stability, point."""
        p = self.predictor
        low, iou = p.prompt_logits(batch[:, None, :], np.ones((len(batch), 1), dtype=np.int64),
                                   multimask_output=True)  # (B, K, s, s), (B, K)
        k = low.shape[1]
        low, iou = low.flatten(0, 1), iou.flatten(0, 1).float()
        coord = np.repeat(batch, k, axis=0)
        keep = iou > self.pred_iou_thresh
        low, iou, coord = low[keep], iou[keep], coord[keep.cpu().numpy()]
        if len(low) == 0:
            h, w = p.original_size
            empty = torch.zeros(0, device=iou.device)
            return torch.zeros(0, h, w, dtype=torch.bool, device=iou.device), empty, empty, coord
        logits = p.postprocess(low[:, None])[:, 0]  # (M, H, W)
        stab = stability_score(logits, p.mask_threshold, self.stability_score_offset)
        mask = logits > p.mask_threshold
        keep = (stab >= self.stability_score_thresh) & mask.flatten(1).any(1)
        return mask[keep], iou[keep], stab[keep].float(), coord[keep.cpu().numpy()]

    def _clean(self, mask: torch.Tensor, iou: torch.Tensor, stab: torch.Tensor, coord: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        """Remove small islands / holes; masks left unchanged rank first in the second NMS (as SAM does)."""
        cleaned, unchanged = [], []
        for m in mask:
            m, changed_holes = remove_small_regions(m, self.min_mask_region_area, "holes")
            m, changed_islands = remove_small_regions(m, self.min_mask_region_area, "islands")
            cleaned.append(m)
            unchanged.append(not (changed_holes or changed_islands))
        mask = torch.stack(cleaned)
        nonempty = mask.flatten(1).any(1)
        rank = torch.tensor(unchanged, dtype=torch.float32, device=mask.device)
        keep = nms(masks_to_boxes(mask), rank + iou.clamp(0, 1) * 1e-3, self.box_nms_thresh)
        keep = keep[nonempty[keep]]
        keep = keep[torch.sort(iou[keep], descending=True, stable=True).indices]
        return mask[keep], iou[keep], stab[keep], coord[keep.cpu().numpy()]
