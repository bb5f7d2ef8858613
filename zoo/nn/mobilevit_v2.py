"""MobileViTv2 blocks as YAML rows.

Paper: Mehta & Rastegari, "Separable Self-attention for Mobile Vision Transformers",
arXiv:2206.02680. The MV2 stages and the stem are shared with v1 (:mod:`zoo.nn.mobilevit_common`).

The transformer works on the unfolded map ``(B, C, P, N)`` (``P`` pixels per patch, ``N`` patches)
with 1x1 convolutions, so no transposes are needed; normalisation is GroupNorm with one group
(over C, P and N together). Row layout (timm ``mobilevitv2_050``)::

    R0  ConvBNAct         [16, 3, 2]          stem                 <- stem.*
    R1  MV2Stage          [32, 1, 2.0]  n=1                        <- stages.0.{j}
    R2  MV2Stage          [64, 2, 2.0]  n=2   P2/4                 <- stages.1.{j}
    R3  MV2Stage          [128, 2, 2.0]       P3/8                 <- stages.2.0
    R4  MobileViTBlockV2  [64, 2]       n=2   dim 64, patch 2      <- stages.2.1
    R5/R6, R7/R8: same for P4/16 and P5/32                         <- stages.3.*, stages.4.*
    R9  ClassifierHead          [nc]                pool + fc            <- head.fc.*
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import exporting
from zoo.nn.mobilevit_common import ConvBNAct
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, same_size

__all__ = ["LinearSelfAttention", "ConvMlp", "LinearAttnFFN", "MobileViTBlockV2"]


class LinearSelfAttention(nn.Module):
    """Separable self-attention, linear in the number of tokens. ``(B, C, P, N) -> (B, C, P, N)``.

    One 1x1 conv gives a scalar query per token plus keys and values; the query is softmaxed over
    the ``N`` patches, the keys are averaged with those weights into one context vector (per pixel
    position ``P``), and ``relu(values) * context`` goes through the output 1x1 conv.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        scores = query.softmax(dim=-1)  # (B, 1, P, N)
        context = (key * scores).sum(dim=-1, keepdim=True)  # (B, C, P, 1)
        return self.out_proj(F.relu(value) * context)


class ConvMlp(nn.Module):
    """1x1 conv -> SiLU -> 1x1 conv. ``(B, C, P, N) -> same``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LinearAttnFFN(nn.Module):
    """Pre-norm layer: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, GroupNorm(1 group). ``(B, C, P, N)``."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _wire_block_v2(ctx: RowContext) -> Wired:
    if not ctx.args:
        raise ValueError("expects [transformer_dim, patch, mlp_ratio] (the last two optional)")
    c1 = ctx.single_input()
    return Wired([c1, ctx.scale_width(ctx.args[0]), ctx.repeats, *ctx.args[1:]], 1, c1)


@register(wiring=custom(_wire_block_v2, "(c1, dim*width, depth=repeats, patch, mlp_ratio) -> c1", same_size()))
class MobileViTBlockV2(nn.Module):
    """MobileViTv2 block: 3x3 depthwise conv -> 1x1 to ``dim`` -> unfold to ``(B, dim, P, N)`` ->
    ``depth`` :class:`LinearAttnFFN` -> GroupNorm -> fold -> 1x1 conv + BN back to ``c1`` (no activation,
    no fusion with the input).

    ``(B, c1, H, W) -> (B, c1, H', W')`` where ``H', W'`` are H, W rounded up to a multiple of ``patch``:
    like the reference, a map that does not divide is first resized (bilinear, corners aligned) and
    keeps that size. YAML: ``[-1, depth, MobileViTBlockV2, [dim, patch, mlp_ratio]]``.
    """

    def __init__(self, c1: int, dim: int, depth: int = 2, patch: int = 2, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if depth < 1 or patch < 1:
            raise ValueError(f"MobileViTBlockV2 needs depth >= 1 and patch >= 1, got depth={depth}, patch={patch}")
        self.patch = patch
        self.conv_kxk = ConvBNAct(c1, c1, 3, g=c1)
        self.conv_1x1 = nn.Conv2d(c1, dim, 1, bias=False)
        self.transformer = nn.Sequential(*(LinearAttnFFN(dim, mlp_ratio) for _ in range(depth)))
        self.norm = nn.GroupNorm(1, dim)
        self.conv_proj = ConvBNAct(dim, c1, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        p = self.patch
        # integer ceil keeps traced sizes symbolic; a traced graph resizes always (same-size bilinear
        # with aligned corners is the identity): the test would be frozen at the example size
        hp, wp = (h + p - 1) // p * p, (w + p - 1) // p * p
        if (hp, wp) != (h, w) or exporting():
            x = F.interpolate(x, size=(hp, wp), mode="bilinear", align_corners=True)
        y = self.conv_1x1(self.conv_kxk(x))
        b, c = y.shape[:2]
        nh, nw = hp // p, wp // p
        t = y.reshape(b, c, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(b, c, p * p, nh * nw)
        t = self.norm(self.transformer(t))
        y = t.reshape(b, c, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, c, hp, wp)
        return self.conv_proj(y)
