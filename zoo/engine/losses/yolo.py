"""YOLOv10 training loss: task-aligned assignment, BCE classification, CIoU + DFL box regression,
on both heads (one-to-many with top-10 assignment, one-to-one with top-1), summed.

Papers: Wang et al., "YOLOv10", arXiv:2405.14458 (consistent dual assignments); Feng et al.,
"TOOD", arXiv:2108.07755 (task-aligned assigner, metric ``s^alpha * u^beta``); Li et al.,
"Generalized Focal Loss", arXiv:2006.04388 (distribution focal loss); Zheng et al., arXiv:1911.08287
(CIoU). Gains and assigner settings are the YOLOv8/v10 defaults (box 7.5, cls 0.5, dfl 1.5;
alpha 0.5, beta 6).

Targets come from a collated batch: ``cls`` (M,), ``boxes`` (M, 4) x1, y1, x2, y2 in input pixels,
``batch_idx`` (M,).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.ops.anchors import box_to_distances, dfl_expectation, dist2bbox, grid_anchors
from zoo.ops.boxes import ciou

__all__ = ["TaskAlignedAssigner", "DetectionBranchLoss", "YOLOv8Loss", "YOLOv10Loss", "LossGains", "grid_anchors",
           "pad_targets"]


@dataclass(frozen=True)
class LossGains:
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


def pad_targets(batch_idx: torch.Tensor, cls: torch.Tensor, boxes: torch.Tensor, batch_size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat targets -> per-image padded ``labels`` (B, N), ``boxes`` (B, N, 4), ``valid`` (B, N) bool."""
    counts = torch.bincount(batch_idx, minlength=batch_size) if batch_idx.numel() else \
        torch.zeros(batch_size, dtype=torch.long, device=boxes.device)
    n = int(counts.max()) if counts.numel() else 0
    labels = torch.zeros(batch_size, n, dtype=torch.long, device=boxes.device)
    out = torch.zeros(batch_size, n, 4, dtype=boxes.dtype, device=boxes.device)
    valid = torch.zeros(batch_size, n, dtype=torch.bool, device=boxes.device)
    if n:
        order = torch.argsort(batch_idx, stable=True)
        bi = batch_idx[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(bi), device=bi.device) - starts[bi]
        labels[bi, slot] = cls[order].long()
        out[bi, slot] = boxes[order]
        valid[bi, slot] = True
    return labels, out, valid


class TaskAlignedAssigner(nn.Module):
    """Assigns each ground-truth box the ``topk`` anchors (centres inside it) with the highest
    alignment ``score^alpha * IoU^beta``; an anchor claimed by several boxes goes to the one it
    overlaps most. Soft targets are the class one-hot scaled by the normalised alignment."""

    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> None:
        super().__init__()
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps

    @torch.no_grad()
    def forward(self, scores: torch.Tensor, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``scores`` (B, A, C) probabilities; ``pred_boxes`` (B, A, 4) and ``anchors`` (A, 2) in pixels;
        ``gt_labels`` (B, N); ``gt_boxes`` (B, N, 4); ``gt_valid`` (B, N).

        Returns target boxes (B, A, 4), target scores (B, A, C), foreground mask (B, A) and the
        assigned ground-truth index (B, A).
        """
        b, a, c = scores.shape
        n = gt_boxes.shape[1]
        if n == 0:
            return (torch.zeros_like(pred_boxes), torch.zeros_like(scores),
                    torch.zeros(b, a, dtype=torch.bool, device=scores.device),
                    torch.zeros(b, a, dtype=torch.long, device=scores.device))
        # Anchor centres strictly inside each gt box: (B, N, A).
        inside = box_to_distances(anchors[None, None], gt_boxes[:, :, None]).amin(-1) > self.eps
        candidate = inside & gt_valid[:, :, None]

        overlaps = ciou(gt_boxes[:, :, None], pred_boxes[:, None]).clamp(min=0) * candidate  # (B, N, A)
        cls_scores = scores.gather(2, gt_labels[:, None, :].expand(b, a, n)).transpose(1, 2)  # (B, N, A)
        align = cls_scores.pow(self.alpha) * overlaps.pow(self.beta) * candidate

        k = min(self.topk, a)
        top_idx = align.topk(k, dim=-1).indices  # (B, N, k)
        chosen = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top_idx, True)
        positive = chosen & candidate  # (B, N, A)

        # An anchor claimed by several boxes keeps only the box it overlaps most.
        multi = positive.sum(1, keepdim=True) > 1
        if multi.any():
            best = overlaps.argmax(1, keepdim=True)
            sole = torch.zeros_like(positive).scatter_(1, best, True)
            positive = torch.where(multi.expand_as(positive), sole & positive.any(1, keepdim=True), positive)
        fg = positive.any(1)  # (B, A)
        gt_idx = positive.float().argmax(1)  # (B, A)

        batch_offsets = torch.arange(b, device=scores.device)[:, None] * n
        flat_idx = gt_idx + batch_offsets
        target_labels = gt_labels.reshape(-1)[flat_idx].clamp(min=0)
        target_boxes = gt_boxes.reshape(-1, 4)[flat_idx]
        target_scores = F.one_hot(target_labels, c).to(scores.dtype) * fg[..., None]

        # Soft target: alignment rescaled so each box's best anchor gets that box's best IoU.
        align = align * positive
        best_align = align.amax(-1, keepdim=True)
        best_overlap = (overlaps * positive).amax(-1, keepdim=True)
        norm = (align * best_overlap / (best_align + self.eps)).amax(1)  # (B, A)
        return target_boxes, target_scores * norm[..., None], fg, gt_idx


class DetectionBranchLoss(nn.Module):
    """BCE + CIoU + DFL for one head branch given per-level raw maps ``(B, 4*reg_max + nc, H, W)``."""

    def __init__(self, nc: int, reg_max: int, strides: list[float], topk: int, gains: LossGains = LossGains()
                 ) -> None:
        super().__init__()
        self.nc, self.reg_max, self.strides, self.gains = nc, reg_max, list(strides), gains
        self.assigner = TaskAlignedAssigner(topk=topk)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    def decode(self, dist: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(B, A, 4*reg_max) distance logits + (A, 2) anchors -> (B, A, 4) x1y1x2y2 (in cells). With one
        bin (``reg_max`` 1, YOLO26) the outputs are the distances themselves, as the head decodes them."""
        distances = dist if self.reg_max == 1 else dfl_expectation(dist, self.bins)
        return dist2bbox(distances, anchors, xywh=False)

    def dfl(self, dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Distribution focal loss: (K, 4, reg_max) logits vs (K, 4) continuous targets -> (K,)."""
        target = target.clamp(0, self.reg_max - 1 - 0.01)
        left = target.long()
        w_right = target - left
        logp = dist.log_softmax(-1)
        loss = -(logp.gather(-1, left[..., None]).squeeze(-1) * (1 - w_right)
                 + logp.gather(-1, (left + 1)[..., None]).squeeze(-1) * w_right)
        return loss.mean(-1)

    def forward(self, levels: list[torch.Tensor], targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:
        """Returns (3,) weighted losses: box (CIoU), cls (BCE), dfl."""
        b = levels[0].shape[0]
        flat = torch.cat([lvl.reshape(b, self.nc + 4 * self.reg_max, -1) for lvl in levels], 2).transpose(1, 2)
        dist, logits = flat.float().split((4 * self.reg_max, self.nc), -1)
        anchors, strides = grid_anchors([tuple(lvl.shape[-2:]) for lvl in levels], self.strides,
                                        flat.device, torch.float32)
        pred_cells = self.decode(dist, anchors)  # (B, A, 4) in cells

        gt_labels, gt_boxes, gt_valid = targets
        target_boxes, target_scores, fg, _ = self.assigner(
            logits.detach().sigmoid(), pred_cells.detach() * strides, anchors * strides,
            gt_labels, gt_boxes, gt_valid)
        score_sum = target_scores.sum().clamp(min=1)

        loss_cls = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum") / score_sum
        loss_box = flat.new_zeros(())
        loss_dfl = flat.new_zeros(())
        if fg.any():
            weight = target_scores.sum(-1)[fg]  # (K,)
            target_cells = (target_boxes / strides)[fg]
            loss_box = ((1 - ciou(pred_cells[fg], target_cells)) * weight).sum() / score_sum
            if self.reg_max > 1:  # one bin has no distribution to shape: CIoU alone trains the box
                anchor_fg = anchors.expand(b, -1, -1)[fg]
                target_ltrb = box_to_distances(anchor_fg, target_cells)
                loss_dfl = (self.dfl(dist[fg].view(-1, 4, self.reg_max), target_ltrb) * weight).sum() / score_sum
        return torch.stack((loss_box * self.gains.box, loss_cls * self.gains.cls, loss_dfl * self.gains.dfl))


def _strides(head: nn.Module) -> list[float]:
    strides = [float(s) for s in head.stride]
    if not strides or min(strides) <= 0:
        raise ValueError("the detection head has no strides; build the model before making its loss")
    return strides


def _targets(batch: dict, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = levels[0].device
    return pad_targets(batch["batch_idx"].to(device), batch["cls"].to(device),
                       batch["boxes"].to(device, torch.float32), levels[0].shape[0])


class YOLOv8Loss(nn.Module):
    """The one-to-many (top-10 task-aligned) branch loss of a ``Detect`` head without a one-to-one branch
    (YOLOv3-v9, YOLO11/12): the same loss as YOLOv10's one-to-many branch.

    ``forward(preds, batch)`` takes the head's training output ``{"one2many": [...]}`` and a collated
    batch; returns ``(loss, items)`` with the detached box / cls / dfl parts.
    """

    item_names = ("box", "cls", "dfl")

    def __init__(self, head: nn.Module, gains: LossGains = LossGains(), topk: int = 10) -> None:
        super().__init__()
        self.one2many = DetectionBranchLoss(head.nc, head.reg_max, _strides(head), topk, gains)

    def forward(self, preds: dict[str, list[torch.Tensor]], batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        levels = preds["one2many"]
        parts = self.one2many(levels, _targets(batch, levels))
        items = {name: float(v) for name, v in zip(self.item_names, parts.detach())}
        return parts.sum(), items


class YOLOv10Loss(nn.Module):
    """Sum of the one-to-many (top-10) and one-to-one (top-1) branch losses.

    ``forward(preds, batch)`` takes the head's training output ``{"one2many": [...], "one2one": [...]}``
    and a collated batch; returns ``(loss, items)`` where ``items`` holds the detached box / cls / dfl
    parts, each summed over both branches.
    """

    item_names = ("box", "cls", "dfl")

    def __init__(self, head: nn.Module, gains: LossGains = LossGains(), topk_many: int = 10, topk_one: int = 1
                 ) -> None:
        super().__init__()
        strides = _strides(head)
        self.one2many = DetectionBranchLoss(head.nc, head.reg_max, strides, topk_many, gains)
        self.one2one = DetectionBranchLoss(head.nc, head.reg_max, strides, topk_one, gains)

    def forward(self, preds: dict[str, list[torch.Tensor]], batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        levels = preds["one2one"]
        targets = _targets(batch, levels)
        parts = self.one2one(levels, targets)
        if "one2many" in preds:
            parts = parts + self.one2many(preds["one2many"], targets)
        items = {name: float(v) for name, v in zip(self.item_names, parts.detach())}
        return parts.sum(), items
