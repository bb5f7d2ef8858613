"""RT-DETR training loss: Hungarian matching, varifocal classification, L1 + GIoU box regression.

Papers: Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", arXiv:2304.08069 (the loss
set-up and weights: varifocal 1, L1 5, GIoU 2; matcher costs class 2, L1 5, GIoU 2); Carion et al.,
"DETR", arXiv:2005.12872 (set prediction by bipartite matching, auxiliary losses on every decoder
layer); Zhang et al., "VarifocalNet", arXiv:2008.13367 (IoU-aware classification target); Lin et
al., "Focal Loss", arXiv:1708.02002 (the matcher's class cost); Zhang et al., "DINO",
arXiv:2203.03605 (denoising queries: their targets are known, so they need no matching).

The linear assignment solver is the shortest augmenting path Hungarian method with row/column
potentials (Kuhn-Munkres as refined by Jonker and Volgenant), O(n^2 m) for an n x m cost matrix.

Targets come from a collated detection batch: ``cls`` (M,), ``boxes`` (M, 4) x1, y1, x2, y2 in
input pixels, ``batch_idx`` (M,) and ``img`` (B, 3, H, W) (for the image size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.ops.boxes import elementwise_iou, giou, pairwise_giou, xywh_to_xyxy, xyxy_to_xywh

__all__ = ["linear_assignment", "HungarianMatcher", "RTDETRLoss", "RTDETRGains", "varifocal_loss",
           "rtdetr_targets"]


def linear_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a ``(n, m)`` cost matrix.

    Returns ``(rows, cols)`` index arrays of length ``min(n, m)``, sorted by row, such that every
    row (if ``n <= m``) or every column (if ``n > m``) is used once and ``cost[rows, cols].sum()``
    is minimal. Non-finite costs are treated as a very large cost.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n > m:
        cols, rows = linear_assignment(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    finite = np.isfinite(cost)
    if not finite.all():
        big = (np.abs(cost[finite]).max() if finite.any() else 1.0) * (n + 1) + 1.0
        cost = np.where(finite, cost, big)
    # 1-based arrays; column 0 is a virtual column that holds the row being inserted
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # row assigned to each column (0 = none)
    way = np.zeros(m + 1, dtype=np.int64)  # previous column on the augmenting path
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.flatnonzero(owner[1:]).astype(np.int64)
    rows = owner[1:][cols] - 1
    order = np.argsort(rows)
    return rows[order], cols[order]


@dataclass(frozen=True)
class RTDETRGains:
    """Loss weights (RT-DETR's defaults) and the matcher's cost weights."""

    cls: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    cost_cls: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    alpha: float = 0.75  # varifocal weight of negatives
    gamma: float = 2.0
    focal_alpha: float = 0.25  # matcher's focal class cost


class HungarianMatcher:
    """One-to-one matching of predicted queries to ground-truth boxes for one image.

    Cost = ``cost_cls * focal_class_cost + cost_l1 * L1(cxcywh) - cost_giou * GIoU``.
    """

    def __init__(self, gains: RTDETRGains = RTDETRGains()) -> None:
        self.gains = gains

    @torch.no_grad()
    def __call__(self, boxes: torch.Tensor, logits: torch.Tensor, gt_boxes: torch.Tensor,
                 gt_cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``boxes (Q, 4)`` cxcywh in [0, 1], ``logits (Q, nc)``, ``gt_boxes (G, 4)`` cxcywh, ``gt_cls (G,)``
        -> ``(query_idx, gt_idx)`` of length ``min(Q, G)``."""
        if gt_boxes.shape[0] == 0 or boxes.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
            return empty, empty
        g = self.gains
        p = logits.float().sigmoid()[:, gt_cls]  # (Q, G)
        pos = g.focal_alpha * (1 - p) ** g.gamma * -(p + 1e-8).log()
        neg = (1 - g.focal_alpha) * p ** g.gamma * -(1 - p + 1e-8).log()
        cost = g.cost_cls * (pos - neg)
        cost = cost + g.cost_l1 * torch.cdist(boxes.float(), gt_boxes.float(), p=1)
        cost = cost - g.cost_giou * pairwise_giou(xywh_to_xyxy(boxes.float()), xywh_to_xyxy(gt_boxes.float()))
        rows, cols = linear_assignment(cost.cpu().numpy())
        device = boxes.device
        return torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)


def varifocal_loss(logits: torch.Tensor, target_score: torch.Tensor, positive: torch.Tensor,
                   alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:
    """Summed varifocal loss. ``logits``, ``target_score`` (IoU at the matched class, else 0) and
    ``positive`` (bool, the matched class of a matched query) all ``(..., nc)``."""
    p = logits.sigmoid().detach()
    weight = torch.where(positive, target_score, alpha * p ** gamma)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target_score.float(), reduction="none")
    return (bce * weight).sum()


def rtdetr_targets(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(cls (M,), boxes (M, 4) cxcywh normalised to [0, 1], batch_idx (M,))`` from a detection batch."""
    h, w = batch["img"].shape[-2:]
    xyxy = batch["boxes"].float()
    scale = xyxy.new_tensor([w, h, w, h])
    boxes = (xyxy_to_xywh(xyxy) / scale).clamp(0.0, 1.0)
    return batch["cls"].long().reshape(-1), boxes, batch["batch_idx"].long().reshape(-1)


class RTDETRLoss(nn.Module):
    """``forward(preds, batch) -> (loss, items)`` for :class:`~zoo.nn.rtdetr_decoder.RTDETRDecoder`.

    ``preds`` is the decoder's training dict (``dec_bboxes (L, B, D+Q, 4)``, ``dec_scores (L, B, D+Q, nc)``,
    ``enc_bboxes (B, Q, 4)``, ``enc_scores (B, Q, nc)``, ``dn_meta``) or its eval ``raw`` dict (one
    layer, no denoising) for a validation loss. Matching queries of every decoder layer and the
    encoder proposals are matched and scored separately; denoising queries are scored against the
    targets they were made from (positive slots from ``dn_meta["dn_pos_idx"]``; the rest must predict
    nothing). Items: ``cls``, ``l1``, ``giou`` (matching, summed over layers) and ``dn_cls``, ``dn_l1``,
    ``dn_giou`` (denoising), each already weighted; the loss is their sum.
    """

    item_names = ("cls", "l1", "giou", "dn_cls", "dn_l1", "dn_giou")

    def __init__(self, nc: int, gains: RTDETRGains = RTDETRGains()) -> None:
        super().__init__()
        self.nc = nc
        self.gains = gains
        self.matcher = HungarianMatcher(gains)

    def _split_targets(self, batch: dict[str, Any], batch_size: int
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cls, boxes, image = rtdetr_targets(batch)
        return [(cls[image == b], boxes[image == b]) for b in range(batch_size)]

    def _score(self, boxes: torch.Tensor, logits: torch.Tensor, targets: list[tuple[torch.Tensor, torch.Tensor]],
               matches: list[tuple[torch.Tensor, torch.Tensor]], num_gts: float) -> tuple[torch.Tensor, ...]:
        """Weighted (cls, l1, giou) for one layer: ``boxes (B, Q, 4)``, ``logits (B, Q, nc)``;
        ``matches[b] = (query_idx, gt_idx)``."""
        g = self.gains
        b_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        q_idx = torch.cat([q for q, _ in matches])
        gt_boxes = torch.cat([targets[b][1][gi] for b, (_, gi) in enumerate(matches)]).to(boxes.dtype)
        gt_cls = torch.cat([targets[b][0][gi] for b, (_, gi) in enumerate(matches)])
        pred = boxes[b_idx, q_idx]
        target_score = torch.zeros_like(logits, dtype=torch.float32)
        positive = torch.zeros_like(logits, dtype=torch.bool)
        if len(q_idx):
            iou = elementwise_iou(xywh_to_xyxy(pred.detach().float()), xywh_to_xyxy(gt_boxes.float()))
            target_score[b_idx, q_idx, gt_cls] = iou.clamp(min=0.0)
            positive[b_idx, q_idx, gt_cls] = True
            l1 = (pred.float() - gt_boxes.float()).abs().sum() / num_gts
            gi = (1.0 - giou(xywh_to_xyxy(pred.float()), xywh_to_xyxy(gt_boxes.float()))).sum() / num_gts
        else:
            l1 = gi = boxes.sum() * 0.0
        cls = varifocal_loss(logits, target_score, positive, g.alpha, g.gamma) / num_gts
        return g.cls * cls, g.l1 * l1, g.giou * gi

    def _matched(self, boxes: torch.Tensor, logits: torch.Tensor,
                 targets: list[tuple[torch.Tensor, torch.Tensor]], num_gts: float) -> tuple[torch.Tensor, ...]:
        matches = [self.matcher(boxes[b], logits[b], gb, gc) for b, (gc, gb) in enumerate(targets)]
        return self._score(boxes, logits, targets, matches, num_gts)

    def forward(self, preds: dict[str, Any], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        dec_boxes, dec_logits = preds["dec_bboxes"], preds["dec_scores"]
        if dec_boxes.dim() == 3:  # eval output: the last layer only
            dec_boxes, dec_logits = dec_boxes.unsqueeze(0), dec_logits.unsqueeze(0)
        batch_size = dec_boxes.shape[1]
        targets = self._split_targets(batch, batch_size)
        num_gts = float(max(sum(len(c) for c, _ in targets), 1))
        meta = preds.get("dn_meta")
        num_dn = int(meta["dn_num_split"][0]) if meta else 0

        zero = dec_boxes.sum() * 0.0
        totals = {k: zero for k in self.item_names}
        layers = [(dec_boxes[i, :, num_dn:], dec_logits[i, :, num_dn:]) for i in range(dec_boxes.shape[0])]
        if preds.get("enc_bboxes") is not None:
            layers.append((preds["enc_bboxes"], preds["enc_scores"]))
        for boxes, logits in layers:
            for name, value in zip(("cls", "l1", "giou"), self._matched(boxes, logits, targets, num_gts)):
                totals[name] = totals[name] + value

        if meta and num_dn:
            groups = int(meta["dn_num_group"])
            dn_matches = []
            for b, pos in enumerate(meta["dn_pos_idx"]):
                n = len(targets[b][0])
                pos = pos.to(dec_boxes.device).long()
                if len(pos) != n * groups:
                    raise ValueError(f"dn_meta gives {len(pos)} positive slots for image {b}, expected "
                                     f"{n} targets x {groups} groups")
                dn_matches.append((pos, torch.arange(n, device=pos.device).repeat(groups)))
            for i in range(dec_boxes.shape[0]):
                values = self._score(dec_boxes[i, :, :num_dn], dec_logits[i, :, :num_dn], targets, dn_matches,
                                     num_gts * groups)
                for name, value in zip(("dn_cls", "dn_l1", "dn_giou"), values):
                    totals[name] = totals[name] + value

        loss = sum(totals.values())
        return loss, {k: float(v.detach()) for k, v in totals.items()}
