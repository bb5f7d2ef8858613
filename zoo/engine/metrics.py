"""Validation metrics: COCO box mAP, mask mIoU, top-k accuracy.

Box mAP follows the COCO evaluation protocol (Lin et al., "Microsoft COCO", arXiv:1405.0312, and
the COCO API's documented procedure) for area range "all":

- per image and class, detections sorted by score (stable) and cut to ``max_dets`` (100);
- at each IoU threshold 0.50:0.05:0.95 every detection is matched greedily, in score order, to the
  unmatched ground truth box with the highest IoU >= threshold (later boxes win exact ties);
- per class, detections of all images are ranked by score, precision is made monotonically
  non-increasing, and sampled at 101 recall points 0:0.01:1 (the first point at or past each);
- classes without ground truth are left out of the mean; classes with ground truth and no
  detections count as zero.

Boxes are x1, y1, x2, y2 and IoU uses areas ``w * h`` (no +1), as the COCO API does.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

__all__ = ["box_iou_np", "DetectionMetrics", "ConfusionMatrix", "MaskIoUMeter", "TopKAccuracy", "COCO_IOU_THRESHOLDS"]

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) x1, y1, x2, y2 boxes -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy COCO matching. ``ious``: (D, G) with detections in score order -> (T, D) bool matched.

    All thresholds advance together: detection ``d`` is matched, per threshold, to the free ground
    truth with the highest IoU if that IoU reaches the threshold.
    """
    n_det, n_gt = ious.shape
    n_t = len(thresholds)
    matched = np.zeros((n_t, n_det), dtype=bool)
    if n_det == 0 or n_gt == 0:
        return matched
    thr = np.minimum(thresholds, 1 - 1e-10)
    taken = np.zeros((n_t, n_gt), dtype=bool)
    rows = np.arange(n_t)
    for d in range(n_det):
        cand = np.where(taken, -1.0, ious[d][None, :])  # (T, G)
        best = cand.max(1)
        g = n_gt - 1 - np.argmax(cand[:, ::-1] == best[:, None], axis=1)  # last of equal bests, as the COCO API
        hit = best >= thr
        matched[hit, d] = True
        taken[rows[hit], g[hit]] = True
    return matched


class DetectionMetrics:
    """Accumulates per-image detections and ground truth; :meth:`compute` gives COCO mAP.

    Call :meth:`update` once per image, in a fixed image order (it decides how equal scores of
    different images are ranked, as image ids do in the COCO API).
    """

    def __init__(self, nc: int, max_dets: int = 100, iou_thresholds: np.ndarray = COCO_IOU_THRESHOLDS) -> None:
        self.nc = nc
        self.max_dets = max_dets
        self.iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64)
        self._scores: dict[int, list[np.ndarray]] = defaultdict(list)
        self._matched: dict[int, list[np.ndarray]] = defaultdict(list)
        self._n_gt = np.zeros(nc, dtype=np.int64)
        self.images = 0

    def update(self, pred_boxes: np.ndarray | torch.Tensor, pred_scores: np.ndarray | torch.Tensor,
               pred_cls: np.ndarray | torch.Tensor, gt_boxes: np.ndarray | torch.Tensor,
               gt_cls: np.ndarray | torch.Tensor) -> None:
        """One image: predictions (D, 4) / (D,) / (D,) and ground truth (G, 4) / (G,), boxes x1y1x2y2."""
        pb, ps, pc, gb, gc = (_np(x) for x in (pred_boxes, pred_scores, pred_cls, gt_boxes, gt_cls))
        pb, gb = pb.reshape(-1, 4), gb.reshape(-1, 4)
        pc, gc = pc.astype(np.int64).reshape(-1), gc.astype(np.int64).reshape(-1)
        ps = ps.reshape(-1).astype(np.float64)
        self.images += 1
        np.add.at(self._n_gt, gc[(gc >= 0) & (gc < self.nc)], 1)
        for c in np.unique(pc):
            if not 0 <= c < self.nc:
                continue
            sel = np.flatnonzero(pc == c)
            order = np.argsort(-ps[sel], kind="mergesort")[: self.max_dets]
            sel = sel[order]
            ious = box_iou_np(pb[sel], gb[gc == c])
            self._scores[int(c)].append(ps[sel])
            self._matched[int(c)].append(_match(ious, self.iou_thresholds))

    def precision_table(self) -> np.ndarray:
        """(T, 101, nc) interpolated precision; -1 for classes without ground truth."""
        n_t = len(self.iou_thresholds)
        table = -np.ones((n_t, len(_RECALL_POINTS), self.nc))
        for c in range(self.nc):
            n_gt = int(self._n_gt[c])
            if n_gt == 0:
                continue
            table[:, :, c] = 0.0
            if not self._scores.get(c):
                continue
            scores = np.concatenate(self._scores[c])
            matched = np.concatenate(self._matched[c], axis=1)
            order = np.argsort(-scores, kind="mergesort")
            tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
            fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
            for t in range(n_t):
                recall = tp[t] / n_gt
                precision = tp[t] / (tp[t] + fp[t] + np.spacing(1))
                precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
                idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
                valid = idx < len(recall)
                table[t, valid, c] = precision[idx[valid]]
        return table

    def compute(self) -> dict[str, float]:
        """``{"mAP50": ..., "mAP50-95": ..., "mAP75": ...}`` in 0..1 (0 when there is no ground truth)."""
        table = self.precision_table()

        def mean(x: np.ndarray) -> float:
            x = x[x > -1]
            return float(x.mean()) if x.size else 0.0

        out = {"mAP50-95": mean(table)}
        for name, thr in (("mAP50", 0.5), ("mAP75", 0.75)):
            hits = np.flatnonzero(np.isclose(self.iou_thresholds, thr))
            if hits.size:
                out[name] = mean(table[hits[0]])
        return out

    def per_class_ap50(self) -> np.ndarray:
        """(nc,) AP at IoU 0.5 per class; NaN for classes without ground truth."""
        table = self.precision_table()[0]
        ap = np.full(self.nc, np.nan)
        has = table[0] > -1
        ap[has] = table[:, has].mean(0)
        return ap

    def pr_curve(self, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """``(recall (101,), precision (nc, 101))``: the interpolated COCO precision at the IoU
        threshold closest to ``iou``; rows of classes without ground truth are NaN."""
        t = int(np.argmin(np.abs(self.iou_thresholds - iou)))
        table = self.precision_table()[t].T.copy()  # (nc, 101)
        table[(table < 0).all(1)] = np.nan
        return _RECALL_POINTS.copy(), table


class ConfusionMatrix:
    """Detection confusion matrix over ``nc`` classes plus background (index ``nc``).

    ``matrix[true, predicted]``: per image, detections scoring at least ``conf`` are paired one to one
    with ground truth boxes of any class, highest IoU first, when the IoU reaches ``iou``. A pair counts
    at ``[gt class, predicted class]``, an unpaired ground truth at ``[gt class, background]`` (missed)
    and an unpaired detection at ``[background, predicted class]`` (false alarm).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.5) -> None:
        self.nc, self.conf, self.iou = nc, conf, iou
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def update(self, pred_boxes: np.ndarray | torch.Tensor, pred_scores: np.ndarray | torch.Tensor,
               pred_cls: np.ndarray | torch.Tensor, gt_boxes: np.ndarray | torch.Tensor,
               gt_cls: np.ndarray | torch.Tensor) -> None:
        pb, ps, pc, gb, gc = (_np(x) for x in (pred_boxes, pred_scores, pred_cls, gt_boxes, gt_cls))
        keep = ps.reshape(-1) >= self.conf
        pb, pc = pb.reshape(-1, 4)[keep], np.clip(pc.reshape(-1)[keep].astype(np.int64), 0, self.nc)
        gb, gc = gb.reshape(-1, 4), np.clip(gc.reshape(-1).astype(np.int64), 0, self.nc)
        ious = box_iou_np(gb, pb)  # (G, D)
        gt_used = np.zeros(len(gb), dtype=bool)
        det_used = np.zeros(len(pb), dtype=bool)
        if ious.size:
            g_idx, d_idx = np.nonzero(ious >= self.iou)
            order = np.argsort(-ious[g_idx, d_idx], kind="mergesort")
            for g, d in zip(g_idx[order], d_idx[order]):
                if not gt_used[g] and not det_used[d]:
                    gt_used[g] = det_used[d] = True
                    self.matrix[gc[g], pc[d]] += 1
        np.add.at(self.matrix, (gc[~gt_used], self.nc), 1)
        np.add.at(self.matrix, (self.nc, pc[~det_used]), 1)


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class MaskIoUMeter:
    """Mean IoU of predicted vs true binary masks, kept separately per key (e.g. prompt type)."""

    def __init__(self) -> None:
        self._sum: dict[str, float] = defaultdict(float)
        self._n: dict[str, int] = defaultdict(int)

    @staticmethod
    def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, H, W) bool masks -> (N,) IoU; an empty prediction of an empty target counts as 1."""
        pred, target = pred.flatten(1).bool(), target.flatten(1).bool()
        inter = (pred & target).sum(1).float()
        union = (pred | target).sum(1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))

    def update(self, pred: torch.Tensor, target: torch.Tensor, key: str = "all") -> torch.Tensor:
        ious = self.iou(pred, target)
        self._sum[key] += float(ious.sum())
        self._n[key] += int(ious.numel())
        return ious

    def compute(self) -> dict[str, float]:
        """``{"mIoU/<key>": mean}`` per key plus ``"mIoU"`` over every mask."""
        out = {f"mIoU/{k}": self._sum[k] / self._n[k] for k in sorted(self._n) if self._n[k]}
        total = sum(self._n.values())
        out["mIoU"] = sum(self._sum.values()) / total if total else 0.0
        return out


class TopKAccuracy:
    """Top-1 / top-k accuracy from scores (logits or probabilities, ranking is what matters)."""

    def __init__(self, ks: tuple[int, ...] = (1, 5)) -> None:
        self.ks = ks
        self.correct = {k: 0 for k in ks}
        self.total = 0

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        """``scores`` (B, C), ``target`` (B,) class indices."""
        k_max = min(max(self.ks), scores.shape[1])
        top = scores.topk(k_max, dim=1).indices
        hit = top == target.view(-1, 1)
        for k in self.ks:
            self.correct[k] += int(hit[:, :k].any(1).sum())
        self.total += int(target.numel())

    def compute(self) -> dict[str, float]:
        return {f"top{k}": self.correct[k] / self.total if self.total else 0.0 for k in self.ks}
