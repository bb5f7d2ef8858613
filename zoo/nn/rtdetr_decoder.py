"""RT-DETR transformer decoder head: query selection, deformable cross-attention, denoising queries.

RT-DETR: Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", arXiv:2304.08069.
Multi-scale deformable attention: Zhu et al., "Deformable DETR", arXiv:2010.04159 (written here in
plain PyTorch as one ``F.embedding_bag`` over bilinear corner rows; no custom CUDA op).
Contrastive denoising: Zhang et al., "DINO", arXiv:2203.03605.

Attribute names follow Ultralytics' ``RTDETRDecoder`` so its checkpoints load strictly.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import MLP, ULTRA_BN_EPS, ULTRA_BN_MOMENTUM, attention, fuse_conv_bn
from zoo.nn.fast_cpu import conv_act, linear, linear_act
from zoo.nn.heads import DEFAULT_MAX_DET
from zoo.nn.rtdetr_denoising import denoising_queries, inverse_sigmoid
from zoo.ops.boxes import xywh_to_xyxy
from zoo.registry import register
from zoo.wiring import multi_input, not_a_map

__all__ = [
    "MultiheadAttention", "MSDeformAttn", "DeformableDecoderLayer", "DeformableDecoder", "RTDETRDecoder",
    "generate_anchors", "deformable_sample_projected",
]


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``torch.nn.MultiheadAttention``'s parameter layout
    (``in_proj_weight (3C, C)``, ``in_proj_bias (3C,)``, ``out_proj``), batch-first, computed with
    :func:`~zoo.nn.common.attention` (``F.scaled_dot_product_attention``).

    ``q, k: (B, Nq|Nk, C)``, ``v: (B, Nk, C)`` -> ``(B, Nq, C)``. ``mask``: bool ``(Nq, Nk)``, True = blocked.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        dim = self.in_proj_weight.shape[1]
        if q is k:  # self-attention with the positions on q and k: one GEMM for both projections
            q, k = linear(q, self.in_proj_weight[:2 * dim], self.in_proj_bias[:2 * dim]).chunk(2, -1)
        else:
            q = linear(q, self.in_proj_weight[:dim], self.in_proj_bias[:dim])
            k = linear(k, self.in_proj_weight[dim:2 * dim], self.in_proj_bias[dim:2 * dim])
        v = linear(v, self.in_proj_weight[2 * dim:], self.in_proj_bias[2 * dim:])
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf"))
        if self.training and self.dropout > 0:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout)
        else:
            out = attention(q, k, v, bias)
        b, _, n, _ = out.shape
        return linear_act(out.transpose(1, 2).reshape(b, n, -1), self.out_proj)


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
        if tokens != value.shape[1]:
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


class DeformableDecoderLayer(nn.Module):
    """Self-attention over queries, deformable cross-attention into the image tokens, FFN; post-norm.

    ``embed (B, Q, C)``, ``ref (B, Q, 4)`` -> ``(B, Q, C)``.
    """

    def __init__(self, d_model: int = 256, n_heads: int = 8, d_ffn: int = 1024, dropout: float = 0.0,
                 act: nn.Module = nn.ReLU(), n_levels: int = 4, n_points: int = 4) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.act = act
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, embed: torch.Tensor, ref: torch.Tensor, feats: torch.Tensor, shapes: list[tuple[int, int]],
                attn_mask: torch.Tensor | None = None, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        qk = embed if query_pos is None else embed + query_pos
        embed = self.norm1(embed + self.drop(self.self_attn(qk, qk, embed, attn_mask)))
        q = embed if query_pos is None else embed + query_pos
        embed = self.norm2(embed + self.drop(self.cross_attn(q, ref.unsqueeze(2), feats, shapes)))
        ffn = linear_act(self.drop(linear_act(embed, self.linear1, self.act)), self.linear2)
        return self.norm3(embed + self.drop(ffn))


class DeformableDecoder(nn.Module):
    """A stack of :class:`DeformableDecoderLayer` with iterative box refinement.

    Returns ``(boxes, logits)`` stacked over layers: every layer in training, only layer ``eval_idx``
    in eval (``(1, B, Q, 4)``, ``(1, B, Q, nc)``). Boxes are cxcywh in [0, 1].
    """

    def __init__(self, layers: list[DeformableDecoderLayer], eval_idx: int = -1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.eval_idx = eval_idx if eval_idx >= 0 else self.num_layers + eval_idx
        if not 0 <= self.eval_idx < self.num_layers:
            raise ValueError(f"eval_idx {eval_idx} is out of range for {self.num_layers} decoder layers")

    def forward(self, embed: torch.Tensor, ref_logits: torch.Tensor, feats: torch.Tensor,
                shapes: list[tuple[int, int]], bbox_heads: nn.ModuleList, score_heads: nn.ModuleList,
                pos_head: nn.Module, attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ref = ref_logits.sigmoid()
        boxes: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        prev = ref
        for i, layer in enumerate(self.layers):
            embed = layer(embed, ref, feats, shapes, attn_mask, pos_head(ref))
            delta = bbox_heads[i](embed)
            refined = torch.sigmoid(delta + inverse_sigmoid(ref))
            if self.training:
                logits.append(score_heads[i](embed))
                # the loss sees boxes refined from the *undetached* previous box, so gradients chain
                boxes.append(refined if i == 0 else torch.sigmoid(delta + inverse_sigmoid(prev)))
            elif i == self.eval_idx:
                logits.append(score_heads[i](embed))
                boxes.append(refined)
                break
            prev = refined
            ref = refined.detach() if self.training else refined
        return torch.stack(boxes), torch.stack(logits)


def generate_anchors(shapes: list[tuple[int, int]], grid_size: float = 0.05, eps: float = 1e-2,
                     dtype: torch.dtype = torch.float32,
                     device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One anchor per feature-map cell, in logit space.

    Level ``l`` cells get centre ``((x+0.5)/w, (y+0.5)/h)`` and size ``grid_size * 2**l``.
    Returns ``anchors (1, sum(h*w), 4)`` (inverse-sigmoid cxcywh, ``inf`` where invalid) and
    ``valid (1, sum(h*w), 1)`` (all four coordinates strictly inside ``(eps, 1-eps)``).
    """
    per_level = []
    for lvl, (h, w) in enumerate(shapes):
        ys = (torch.arange(h, dtype=dtype, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=dtype, device=device) + 0.5) / w
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        wh = torch.full_like(cx, grid_size * 2.0 ** lvl)
        per_level.append(torch.stack([cx, cy, wh, wh], -1).reshape(1, h * w, 4))
    anchors = torch.cat(per_level, 1)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    anchors = torch.log(anchors / (1 - anchors)).masked_fill(~valid, float("inf"))
    return anchors, valid


@register(wiring=multi_input(insert_at=1, spatial=not_a_map()))
class RTDETRDecoder(nn.Module):
    """RT-DETR head: projects each input level to ``hd`` channels, scores every cell as a candidate
    (encoder head), keeps the top ``nq`` as queries with their boxes as references, and refines them
    through ``ndl`` deformable decoder layers.

    Args (YAML ``[nc, hd, nq, ndp, nh, ndl, d_ffn, dropout, act, eval_idx, nd, label_noise_ratio,
    box_noise_scale, learnt_init_query]``; ``ch`` is filled in by the builder): ``nd`` is the number of
    denoising queries used in training (0 disables denoising).

    Input: list of ``(B, ch[i], H_i, W_i)`` maps. Output:

    * eval (the detection contract of :mod:`zoo.nn.heads`): ``(detections, raw)``. ``detections
      (B, K, 6)`` are ``[x1, y1, x2, y2, score, class]`` in input-image pixels, the top
      ``K = min(max_det, Q*nc)`` (query, class) pairs by sigmoid score (NMS-free). ``raw`` is a dict
      with ``dec_bboxes (B, Q, 4)`` (last layer, cxcywh normalised to [0, 1]), ``dec_scores (B, Q, nc)``
      (last-layer class logits), ``enc_bboxes (B, Q, 4)`` and ``enc_scores (B, Q, nc)`` (the selected
      encoder proposals).
    * training (``forward(x, batch=...)``): a dict with ``dec_bboxes (L, B, D+Q, 4)``,
      ``dec_scores (L, B, D+Q, nc)`` for every decoder layer (the first ``D`` queries are denoising
      queries), ``enc_bboxes``, ``enc_scores`` and ``dn_meta`` (``None`` without denoising, else
      ``dn_pos_idx`` / ``dn_num_group`` / ``dn_num_split`` as documented in
      :func:`~zoo.nn.rtdetr_denoising.denoising_queries`).
    """

    task = "detect"
    loss = "rtdetr"  # its training loss: the "rtdetr" entry of zoo.engine.tasks.heads.HEADS

    def __init__(self, nc: int = 80, ch: tuple[int, ...] | list[int] = (512, 1024, 2048), hd: int = 256,
                 nq: int = 300, ndp: int = 4, nh: int = 8, ndl: int = 6, d_ffn: int = 1024, dropout: float = 0.0,
                 act: nn.Module | None = nn.ReLU(), eval_idx: int = -1, nd: int = 100, label_noise_ratio: float = 0.5,
                 box_noise_scale: float = 1.0, learnt_init_query: bool = False) -> None:
        super().__init__()
        if not isinstance(nc, int) or nc < 1:
            raise ValueError(f"nc must be a positive integer, got {nc!r}")
        if not ch:
            raise ValueError("RTDETRDecoder needs at least one input feature map")
        if nq < 1 or ndl < 1 or nd < 0:
            raise ValueError(f"need nq >= 1, ndl >= 1 and nd >= 0 (got nq={nq}, ndl={ndl}, nd={nd})")
        self.nc, self.hidden_dim, self.nhead = nc, hd, nh
        self.nl = len(ch)
        self.num_queries, self.num_decoder_layers = nq, ndl
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = nd, label_noise_ratio, box_noise_scale
        self.max_det = DEFAULT_MAX_DET
        self.strides: list[float] = [8.0 * 2 ** i for i in range(self.nl)]  # set by the builder

        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hd, 1, bias=False),
                          nn.BatchNorm2d(hd, eps=ULTRA_BN_EPS, momentum=ULTRA_BN_MOMENTUM))
            for c in ch
        )
        act = nn.ReLU() if act is None else act  # a YAML row cannot spell a module: None = the default
        layers = [DeformableDecoderLayer(hd, nh, d_ffn, dropout, act, self.nl, ndp) for _ in range(ndl)]
        self.decoder = DeformableDecoder(layers, eval_idx)
        self.denoising_class_embed = nn.Embedding(nc, hd)
        self.learnt_init_query = learnt_init_query
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(nq, hd)
        self.query_pos_head = MLP(4, 2 * hd, hd, num_layers=2)
        self.enc_output = nn.Sequential(nn.Linear(hd, hd), nn.LayerNorm(hd))
        self.enc_score_head = nn.Linear(hd, nc)
        self.enc_bbox_head = MLP(hd, hd, 4, num_layers=3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hd, nc) for _ in range(ndl))
        self.dec_bbox_head = nn.ModuleList(MLP(hd, hd, 4, num_layers=3) for _ in range(ndl))
        self._anchor_key: tuple | None = None
        self._anchors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reset_parameters()

    @torch.no_grad()
    def _reset_parameters(self) -> None:
        # classification prior of 1% (focal-loss style), scaled from the 80-class setting
        bias_cls = -math.log((1 - 0.01) / 0.01) / 80 * self.nc
        nn.init.constant_(self.enc_score_head.bias, bias_cls)
        for head in [self.enc_bbox_head, *self.dec_bbox_head]:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for score in self.dec_score_head:
            nn.init.constant_(score.bias, bias_cls)
        bound = 1 / math.sqrt(self.enc_output[0].weight.shape[0])
        nn.init.uniform_(self.enc_output[0].bias, -bound, bound)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        if self.learnt_init_query:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        for lin in self.query_pos_head.layers:
            nn.init.xavier_uniform_(lin.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold each input projection's BatchNorm into its 1x1 conv (inference; idempotent)."""
        for i, proj in enumerate(self.input_proj):
            if len(proj) == 2:
                self.input_proj[i] = nn.Sequential(fuse_conv_bn(proj[0], proj[1]))

    def set_strides(self, strides: list[float]) -> None:
        """Strides of the input maps (the builder calls this); used to express boxes in pixels."""
        if len(strides) != self.nl:
            raise ValueError(f"RTDETRDecoder has {self.nl} inputs but got {len(strides)} strides")
        self.strides = [float(s) for s in strides]

    def _anchors_for(self, shapes: list[tuple[int, int]], ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(shapes), ref.device, ref.dtype)
        if self._anchor_key != key or self._anchors is None:
            self._anchors = generate_anchors(shapes, dtype=ref.dtype, device=ref.device)
            self._anchor_key = key
        return self._anchors

    def _encoder_input(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project and flatten every level: ``(B, sum(h*w), hd)`` plus the ``(h, w)`` of each level."""
        if len(x) != self.nl:
            raise ValueError(f"RTDETRDecoder expects {self.nl} feature maps, got {len(x)}")
        tokens, shapes = [], []
        for proj, feat in zip(self.input_proj, x):
            y = conv_act(feat, proj[0]) if len(proj) == 1 else proj(feat)
            shapes.append((int(y.shape[2]), int(y.shape[3])))
            tokens.append(y.flatten(2).transpose(1, 2))
        return torch.cat(tokens, 1), shapes

    def encoder_scores(self, feats: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every cell as a candidate query: ``feats (B, L, hd)``, ``valid (1, L, 1)`` -> memory
        ``(B, L, hd)`` (invalid border cells zeroed first) and class logits ``(B, L, nc)``."""
        # the Sequential's Linear and LayerNorm one by one: nn.Linear on a 3-D input is a plain addmm,
        # the oneDNN call is ~2x faster on CPU here (8400 x 256 x 256 at 640)
        project, norm = self.enc_output
        # a zeroed cell projects to the bias: set the few invalid rows (the level-0 border at 640)
        # after the GEMM instead of masking every input row before it
        memory = linear_act(feats, project)
        invalid = (~valid[0, :, 0]).nonzero().squeeze(1)
        memory[:, invalid] = project.bias if project.bias is not None else 0.0
        memory = norm(memory)
        return memory, linear_act(memory, self.enc_score_head)

    def _decoder_input(self, feats: torch.Tensor, shapes: list[tuple[int, int]], dn_embed: torch.Tensor | None,
                       dn_bbox: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k query selection: ``(embed, ref_logits, enc_bboxes, enc_scores)``."""
        b = feats.shape[0]
        anchors, valid = self._anchors_for(shapes, feats)
        memory, scores = self.encoder_scores(feats, valid)
        k = min(self.num_queries, memory.shape[1])
        top = torch.topk(scores.max(-1).values, k, dim=1).indices  # (B, k)
        gather = top.unsqueeze(-1)
        top_memory = memory.gather(1, gather.expand(-1, -1, memory.shape[-1]))
        top_anchors = anchors.expand(b, -1, -1).gather(1, gather.expand(-1, -1, 4))
        ref_logits = self.enc_bbox_head(top_memory) + top_anchors
        enc_bboxes = ref_logits.sigmoid()
        enc_scores = scores.gather(1, gather.expand(-1, -1, self.nc))
        embed = self.tgt_embed.weight[:k].unsqueeze(0).expand(b, -1, -1) if self.learnt_init_query else top_memory
        if self.training:
            # queries are selected, not learned through: only the heads see the encoder's gradient
            ref_logits = ref_logits.detach()
            if not self.learnt_init_query:
                embed = embed.detach()
        if dn_bbox is not None:
            ref_logits = torch.cat([dn_bbox, ref_logits], 1)
            embed = torch.cat([dn_embed, embed], 1)
        return embed, ref_logits, enc_bboxes, enc_scores

    def forward(self, x: list[torch.Tensor], *, batch: dict[str, Any] | None = None,
                max_det: int | None = None) -> Any:
        """``batch``: training targets for the denoising queries; ``max_det`` (eval only): detections to
        return per image, default :attr:`max_det`."""
        feats, shapes = self._encoder_input(x)
        dn_embed = dn_bbox = attn_mask = dn_meta = None
        if self.training and batch is not None and self.num_denoising > 0:
            num_queries = min(self.num_queries, feats.shape[1])
            dn_embed, dn_bbox, attn_mask, dn_meta = denoising_queries(
                batch, feats.shape[0], self.nc, num_queries, self.denoising_class_embed.weight,
                self.num_denoising, self.label_noise_ratio, self.box_noise_scale,
            )
        embed, ref_logits, enc_bboxes, enc_scores = self._decoder_input(feats, shapes, dn_embed, dn_bbox)
        dec_bboxes, dec_scores = self.decoder(embed, ref_logits, feats, shapes, self.dec_bbox_head,
                                              self.dec_score_head, self.query_pos_head, attn_mask)
        if self.training:
            return {"dec_bboxes": dec_bboxes, "dec_scores": dec_scores, "enc_bboxes": enc_bboxes,
                    "enc_scores": enc_scores, "dn_meta": dn_meta}
        raw = {"dec_bboxes": dec_bboxes[-1], "dec_scores": dec_scores[-1], "enc_bboxes": enc_bboxes,
               "enc_scores": enc_scores}
        return self.postprocess(raw["dec_bboxes"], raw["dec_scores"], shapes, max_det), raw

    def postprocess(self, boxes: torch.Tensor, logits: torch.Tensor, shapes: list[tuple[int, int]],
                    max_det: int | None = None) -> torch.Tensor:
        """Top-k over queries x classes: ``(B, Q, 4)`` cxcywh + ``(B, Q, nc)`` logits -> ``(B, K, 6)``
        ``[x1, y1, x2, y2, score, class]`` in pixels of the input image (size = level-0 map x its stride)."""
        b, q, nc = logits.shape
        img_h, img_w = shapes[0][0] * self.strides[0], shapes[0][1] * self.strides[0]
        k = min(self.max_det if max_det is None else max_det, q * nc)
        scores, idx = logits.sigmoid().flatten(1).topk(k, dim=1)
        labels = idx % nc
        picked = boxes.gather(1, (idx // nc).unsqueeze(-1).expand(-1, -1, 4))
        xyxy = xywh_to_xyxy(picked)
        xyxy = xyxy * xyxy.new_tensor([img_w, img_h, img_w, img_h])
        return torch.cat([xyxy, scores.unsqueeze(-1), labels.unsqueeze(-1).to(xyxy.dtype)], -1)
