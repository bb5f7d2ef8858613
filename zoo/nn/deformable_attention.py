"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", arXiv:2010.04159) in plain
PyTorch: every (query, head) row gathers its weighted bilinear corners of the raw memory with one
``F.embedding_bag`` and then applies its head's slice of the value projection (sampling and the
projection are both linear, so the order can be swapped); no custom CUDA op.

While a graph is being traced for export the same sampling runs as Deformable DETR writes it:
project, then one ``F.grid_sample`` per level (ONNX ``GridSample``, opset 16+), since
``embedding_bag`` has no ONNX operator (the TorchScript exporter unrolls it into a ``Loop``)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import exporting
from zoo.nn.fast_cpu import linear_act

__all__ = ["MSDeformAttn", "deformable_sample_projected", "grid_sample_projected"]


def _corner_taps(shapes: list[tuple[int, int]], tokens: int, locations: torch.Tensor,
                 weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear corners of every sampling point as flat token rows and per-corner weights.

    locations: ``(B, Q, heads, levels, points, 2)`` as (x, y) in [0, 1]; weights:
    ``(B, Q, heads, levels, points)``. Returns ``rows`` (int64) and ``corner_weight``, both
    ``(B, Q, heads, 4*levels*points)``: row ``b*tokens + token`` into the ``(B*tokens, ...)`` value
    table and bilinear x attention weight, zero for corners off the map (``grid_sample``'s zero
    padding, ``align_corners=False``).

    A (query, head) row's taps are summed, so their order is free: corner-major
    (``4 x levels*points``) keeps every op below on whole ``(rows, levels*points)`` planes instead of
    broadcasting over trailing dims of 2 or 4 (1.2-1.8 -> 0.65 ms per RT-DETR layer at 640).
    """
    b, q, heads, levels, points = locations.shape[:5]
    n, lp = b * q * heads, levels * points
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    per_tap = torch.tensor([(w, h, s) for (h, w), s in zip(shapes, starts)], device=locations.device,
                           dtype=locations.dtype).repeat_interleave(points, 0)
    width, height, start = per_tap.unbind(1)  # (levels*points,) each
    loc = locations.reshape(n, lp, 2)
    x = loc[..., 0] * width - 0.5  # pixel coordinates; pixel centres sit at +0.5
    y = loc[..., 1] * height - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    # each axis' low / high neighbour weight, zero where that neighbour is off the map
    wx0 = (1.0 - fx) * ((x0 >= 0) & (x0 < width))
    wx1 = fx * ((x0 >= -1) & (x0 < width - 1))
    attn = weights.reshape(n, lp)
    wy0 = (1.0 - fy) * ((y0 >= 0) & (y0 < height)) * attn
    wy1 = fy * ((y0 >= -1) & (y0 < height - 1)) * attn
    corner_weight = torch.stack((wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1), 1)  # (n, 4, lp)
    base = y0 * width + x0 + start
    # an off-map corner weighs zero, so any in-range row will do for it
    rows = torch.stack((base, base + 1, base + width, base + width + 1), 1).long().clamp_(0, tokens - 1)
    if b > 1:
        rows = rows.view(b, -1).add_(torch.arange(b, device=rows.device).view(b, 1) * tokens)
    return rows.view(b, q, heads, 4 * lp), corner_weight.view(b, q, heads, 4 * lp)


def deformable_sample_projected(memory: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                                weights: torch.Tensor, proj: nn.Linear,
                                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-scale deformable sampling of ``proj(memory)``, computed by sampling first.

    memory: ``(B, T, C)`` over all levels' ``sum(h*w)`` tokens; ``proj``: ``C -> heads*d``; locations:
    ``(B, Q, heads, levels, points, 2)`` as (x, y) in [0, 1]; weights: ``(B, Q, heads, levels, points)``;
    ``memory_mask``: bool ``(B, T)``, True = padding (its projected value counts as zero, bias
    included). Returns ``(B, Q, heads*d)``: per head, the weighted sum of the bilinear samples.

    Same values and gradients as projecting, splitting into heads, ``F.grid_sample`` per level
    (bilinear, zero padding, ``align_corners=False``) and the weighted sum, but as one
    ``F.embedding_bag``: every (query, head) row is a weighted sum of the memory rows at its
    ``levels x points x 4`` corner pixels (bilinear x attention weight per corner), never
    materialising the samples. Sampling and the projection are both linear, so that one gathered
    ``C``-vector is then projected with the head's slice of ``proj``; the bias enters scaled by the
    row's total in-map corner weight (zero padding contributes no bias). At RT-DETR's sizes that is
    ~115k corner rows per layer instead of projecting all 8400 tokens: grid_sample 9.8 -> gathered
    3.2 ms, then 7.9 -> 3.2 ms per decoder layer at 640 with the projection moved after the gather
    (batch 1); half the time in training.
    """
    if exporting():
        return grid_sample_projected(memory, shapes, locations, weights, proj, memory_mask)
    b, tokens, c = memory.shape
    heads = locations.shape[2]
    d = proj.weight.shape[0] // heads
    rows, corner_weight = _corner_taps(shapes, tokens, locations, weights)
    if memory_mask is not None:
        corner_weight = corner_weight * ~memory_mask.reshape(-1)[rows]
    corner_weight = corner_weight.to(memory.dtype)
    gathered = F.embedding_bag(rows.view(-1, rows.shape[-1]), memory.reshape(b * tokens, c), mode="sum",
                               per_sample_weights=corner_weight.view(-1, rows.shape[-1]))
    # per head: (heads, B*Q, C) @ (heads, C, d), plus the bias times the row's corner-weight total
    by_head = gathered.view(-1, heads, c).transpose(0, 1)
    weight_total = corner_weight.sum(-1).view(-1, heads).t().unsqueeze(-1)  # (heads, B*Q, 1)
    bias = proj.bias.view(heads, 1, d) * weight_total if proj.bias is not None else None
    head_weight = proj.weight.view(heads, d, c).transpose(1, 2)
    out = torch.bmm(by_head, head_weight) if bias is None else torch.baddbmm(bias, by_head, head_weight)
    return out.transpose(0, 1).reshape(b, -1, heads * d)


def grid_sample_projected(memory: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                          weights: torch.Tensor, proj: nn.Linear,
                          memory_mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`deformable_sample_projected` the textbook way, for exported graphs: ``proj(memory)``
    split into heads, one ``F.grid_sample`` per level (bilinear, zero padding, ``align_corners=False``)
    and the attention-weighted sum. Same arguments and result; the level sizes in ``shapes`` may be
    traced sizes, so the graph follows the input size.

    Only standard ops (ONNX ``GridSample`` from opset 16), but it projects every token and
    materialises the samples, which the gathered form avoids (slower in eager PyTorch on CPU).
    """
    b, q, heads, levels, points = locations.shape[:5]
    d = proj.weight.shape[0] // heads
    value = F.linear(memory, proj.weight, proj.bias)
    if memory_mask is not None:
        value = value.masked_fill(memory_mask.unsqueeze(-1), 0.0)
    value = value.transpose(1, 2)  # (B, heads*d, T): each level is a slice of the token axis
    grids = (locations * 2.0 - 1.0).transpose(1, 2)  # (B, heads, Q, levels, points, 2) in [-1, 1]
    sampled = []
    start = 0
    for level, (h, w) in enumerate(shapes):
        level_value = value[:, :, start:start + h * w].reshape(b * heads, d, h, w)
        grid = grids[:, :, :, level].reshape(b * heads, q, points, 2)
        sampled.append(F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        start = start + h * w
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*heads, d, Q, levels*points)
    attn = weights.transpose(1, 2).reshape(b * heads, 1, q, levels * points)
    return (stacked * attn).sum(-1).view(b, heads * d, q).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query reads ``n_points`` bilinear samples per head and
    level around its reference box, weighted by a softmax over ``levels x points``.

    ``query (B, Q, C)``, ``ref (B, Q, 1, 4)`` cxcywh in [0, 1], ``value (B, sum(h*w), C)`` -> ``(B, Q, C)``.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"hidden width {d_model} is not divisible by {n_heads} heads")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    @torch.no_grad()
    def _reset_parameters(self) -> None:
        # offsets start on a ring of head-specific directions, point i at distance i+1 (Deformable DETR)
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        dirs = torch.stack([angles.cos(), angles.sin()], -1)
        dirs = dirs / dirs.abs().max(-1, keepdim=True).values
        radius = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = dirs.view(self.n_heads, 1, 1, 2) * radius
        self.sampling_offsets.bias.copy_(grid.expand(self.n_heads, self.n_levels, self.n_points, 2).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, ref: torch.Tensor, value: torch.Tensor, shapes: list[tuple[int, int]],
                value_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, q = query.shape[:2]
        tokens = sum(h * w for h, w in shapes)
        if not exporting() and tokens != value.shape[1]:  # traced sizes: a check would be a constant
            raise ValueError(f"value has {value.shape[1]} tokens but level shapes {shapes} need {tokens}")
        offsets = linear_act(query, self.sampling_offsets).view(b, q, self.n_heads, self.n_levels, self.n_points, 2)
        weights = linear_act(query, self.attention_weights).view(b, q, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(b, q, self.n_heads, self.n_levels, self.n_points)
        if ref.shape[-1] == 2:  # reference points: offsets are in pixels of each level
            size_xy = torch.as_tensor(shapes, dtype=query.dtype, device=query.device).flip(-1)
            locations = ref[:, :, None, :, None, :] + offsets / size_xy[None, None, None, :, None, :]
        elif ref.shape[-1] == 4:  # reference boxes: offsets are fractions of half the box size
            locations = ref[:, :, None, :, None, :2] + offsets / self.n_points * ref[:, :, None, :, None, 2:] * 0.5
        else:
            raise ValueError(f"reference must end in 2 (points) or 4 (boxes), got {tuple(ref.shape)}")
        sampled = deformable_sample_projected(value, shapes, locations, weights, self.value_proj, value_mask)
        return linear_act(sampled, self.output_proj)
