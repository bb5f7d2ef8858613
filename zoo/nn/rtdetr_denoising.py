"""Contrastive denoising queries for RT-DETR training.

RT-DETR (arXiv:2304.08069) trains its decoder with DINO's contrastive denoising (arXiv:2203.03605):
noised copies of the ground-truth boxes are fed as extra queries, "positive" ones (small noise) that
must reconstruct their box and "negative" ones (larger noise) that must predict no object. An
attention mask keeps the matching queries from seeing them and the groups from seeing each other.
"""
from __future__ import annotations

from typing import Any

import torch

from zoo.ops.boxes import xywh_to_xyxy, xyxy_to_xywh

__all__ = ["inverse_sigmoid", "denoising_queries"]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped to [0, 1] and both terms floored at ``eps``."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def _targets(batch: dict[str, Any], batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Validate the ``batch`` dict and return ``(cls, boxes, image_index, gts_per_image)``."""
    missing = [k for k in ("cls", "bboxes", "batch_idx") if k not in batch]
    if missing:
        raise KeyError(f"RT-DETR training batch needs keys 'cls', 'bboxes', 'batch_idx'; missing {missing}")
    cls = torch.as_tensor(batch["cls"]).reshape(-1).long()
    boxes = torch.as_tensor(batch["bboxes"]).reshape(-1, 4).float()
    image = torch.as_tensor(batch["batch_idx"]).reshape(-1).long()
    if not len(cls) == len(boxes) == len(image):
        raise ValueError(f"batch has {len(cls)} classes, {len(boxes)} boxes and {len(image)} image indices")
    if len(image) and (image.min() < 0 or image.max() >= batch_size):
        raise ValueError(f"batch_idx must lie in [0, {batch_size}), got range [{int(image.min())}, {int(image.max())}]")
    groups = batch.get("gt_groups")
    if groups is None:
        groups = torch.bincount(image.cpu(), minlength=batch_size).tolist()
    groups = [int(g) for g in groups]
    if len(groups) != batch_size or sum(groups) != len(cls):
        raise ValueError(f"gt_groups {groups} does not match batch size {batch_size} and {len(cls)} targets")
    # targets must be grouped by image so that each image's boxes get consecutive slots
    order = torch.argsort(image, stable=True)
    return cls[order], boxes[order], image[order], groups


def denoising_queries(batch: dict[str, Any], batch_size: int, num_classes: int, num_queries: int,
                      class_embed: torch.Tensor, num_dn: int = 100, label_noise_ratio: float = 0.5,
                      box_noise_scale: float = 1.0) -> tuple[Any, Any, Any, Any]:
    """Build denoising queries from ground truth.

    Args:
        batch: ``cls (N,)`` or ``(N, 1)`` class ids, ``bboxes (N, 4)`` cxcywh normalised to [0, 1],
            ``batch_idx (N,)`` image index of each target, optionally ``gt_groups`` (targets per image).
        batch_size: ``B``; num_queries: the number of matching queries that follow the denoising ones.
        class_embed: ``(nc, hd)`` label embedding table (``denoising_class_embed.weight``).
        num_dn: budget of denoising queries; ``G = max(num_dn // max_gt, 1)`` groups are made, each
            holding ``max_gt`` positive then ``max_gt`` negative slots.

    Returns ``(embed (B, D, hd), ref_logits (B, D, 4), attn_mask (D+Q, D+Q) bool True=blocked, meta)``
    with ``D = 2 * G * max_gt``, or four ``None`` when there is no target or ``num_dn <= 0``. ``meta``:
    ``dn_pos_idx`` (per image, the positive query indices group by group, each group in target order),
    ``dn_num_group`` (``G``) and ``dn_num_split`` (``[D, Q]``).
    """
    if num_dn <= 0:
        return None, None, None, None
    cls, boxes, image, groups = _targets(batch, batch_size)
    max_gt = max(groups) if groups else 0
    if max_gt == 0:
        return None, None, None, None
    device = class_embed.device
    cls, boxes, image = cls.to(device), boxes.to(device), image.to(device)
    num_group = max(num_dn // max_gt, 1)
    total = len(cls)
    group_len = 2 * max_gt
    num_dn_total = group_len * num_group

    # slot of each target inside its image's block: 0..n_b-1
    starts = torch.tensor([0] + groups[:-1], device=device).cumsum(0)
    local = torch.arange(total, device=device) - starts[image]

    # copies ordered (group, polarity, target): polarity 0 = positive, 1 = negative
    group_id = torch.arange(num_group, device=device).repeat_interleave(2 * total)
    negative = torch.arange(2, device=device).repeat_interleave(total).repeat(num_group).bool()
    dn_cls = cls.repeat(2 * num_group)
    dn_boxes = boxes.repeat(2 * num_group, 1)
    dn_image = image.repeat(2 * num_group)
    slot = group_id * group_len + negative.long() * max_gt + local.repeat(2 * num_group)

    if label_noise_ratio > 0:
        flip = torch.rand(dn_cls.shape, device=device) < label_noise_ratio * 0.5
        dn_cls = torch.where(flip, torch.randint_like(dn_cls, 0, num_classes), dn_cls)
    if box_noise_scale > 0:
        corners = xywh_to_xyxy(dn_boxes)
        half_wh = (dn_boxes[:, 2:] * 0.5).repeat(1, 2) * box_noise_scale
        sign = torch.randint(0, 2, dn_boxes.shape, device=device).float() * 2.0 - 1.0
        # positives move by < half their size, negatives by between one and two half-sizes
        magnitude = torch.rand_like(dn_boxes) + negative.float().unsqueeze(-1)
        corners = (corners + sign * magnitude * half_wh).clamp(0.0, 1.0)
        dn_boxes = xyxy_to_xywh(corners)
    dn_logits = torch.logit(dn_boxes, eps=1e-6)

    embed = class_embed.new_zeros(batch_size, num_dn_total, class_embed.shape[-1])
    refs = class_embed.new_zeros(batch_size, num_dn_total, 4)
    embed[dn_image, slot] = class_embed[dn_cls]
    refs[dn_image, slot] = dn_logits.to(refs.dtype)

    size = num_dn_total + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[num_dn_total:, :num_dn_total] = True  # matching queries never see ground truth
    for g in range(num_group):
        lo, hi = g * group_len, (g + 1) * group_len
        mask[lo:hi, :lo] = True
        mask[lo:hi, hi:num_dn_total] = True

    pos_idx = []
    for n in groups:
        idx = torch.arange(n) + (torch.arange(num_group) * group_len).unsqueeze(1)
        pos_idx.append(idx.reshape(-1))
    meta = {"dn_pos_idx": pos_idx, "dn_num_group": num_group, "dn_num_split": [num_dn_total, num_queries]}
    return embed, refs, mask, meta
