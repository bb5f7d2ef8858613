"""MobileViT (v1) as YAML rows, plus a whole-backbone row for v1 and v2.

Paper: Mehta & Rastegari, "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision
Transformer", arXiv:2110.02178. v2 blocks live in :mod:`zoo.nn.mobilevit_v2` (arXiv:2206.02680); the
stem conv and the MV2 blocks both versions use live in :mod:`zoo.nn.mobilevit_common` (re-exported here).

Every row maps ``(B, C, H, W)`` feature maps. BatchNorm uses PyTorch's default ``eps=1e-5`` (timm /
ml-cvnets), activations are SiLU. Nothing depends on the image size: a MobileViT block resizes its map
to a multiple of the patch size when needed (bilinear, as the reference does), so any input that is
a multiple of 32 works (and most others).

Stage-level row layout (timm ``mobilevit_xxs``; ``R`` = row)::

    R0  ConvBNAct        [16, 3, 2]           stem                      <- timm stem.*
    R1  MV2Stage         [16, 1, 2.0]  n=1                              <- stages.0.{j}
    R2  MV2Stage         [24, 2, 2.0]  n=3    P2/4                      <- stages.1.{j}
    R3  MV2Stage         [48, 2, 2.0]         P3/8                      <- stages.2.0
    R4  MobileViTBlock   [64, 16, 2]   n=2    dim 64, head_dim 16, patch 2   <- stages.2.1
    R5  MV2Stage / R6 MobileViTBlock          P4/16                     <- stages.3.{0,1}
    R7  MV2Stage / R8 MobileViTBlock          P5/32                     <- stages.4.{0,1}
    R9  ClassifierHead         [nc, 320]            final 1x1 expansion + pool + fc  <- final_conv.*, head.fc.*

A timm stage is one MV2Stage row (whose ``blocks.{j}`` are timm's ``stages.{i}.{j}``) followed by the
MobileViT block row, if any, which takes the next index ``j``. :class:`MobileViTBackbone` keeps timm's
own names (``stem``, ``stages.{i}.{j}``, ``final_conv``) so its keys are timm's keys under ``model.{row}.``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import attention, exporting
from zoo.nn.mobilevit_common import ConvBNAct, InvertedResidual, MV2Stage, round_channels
from zoo.nn.mobilevit_v2 import MobileViTBlockV2
from zoo.nn.tiny_vit import heads_for
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, pyramid, same_size

__all__ = [
    "round_channels", "ConvBNAct", "InvertedResidual", "MV2Stage", "TransformerEncoder", "MobileViTBlock",
    "MobileViTBackbone", "VARIANTS",
]


class MultiHeadSelfAttention(nn.Module):
    """ViT attention on ``(B, N, dim)`` tokens; qkv laid out as ``[q | k | v]`` over all heads (timm)."""

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads_for(dim, head_dim)
        self.head_dim = head_dim
        inner = self.heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v)  # (B, heads, N, head_dim), scale head_dim^-0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class TokenMlp(nn.Module):
    """Linear -> SiLU -> Linear on ``(..., dim)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerEncoder(nn.Module):
    """Pre-norm transformer layer: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``. ``(B, N, dim) -> same``."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TokenMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _wire_mobilevit_block(ctx: RowContext) -> Wired:
    if not ctx.args:
        raise ValueError("expects [transformer_dim, head_dim, patch, mlp_ratio] (the last two optional)")
    c1 = ctx.single_input()
    return Wired([c1, ctx.scale_width(ctx.args[0]), ctx.repeats, *ctx.args[1:]], 1, c1)


@register(wiring=custom(_wire_mobilevit_block, "(c1, dim*width, depth=repeats, head_dim, patch, mlp_ratio) -> c1",
                        same_size()))
class MobileViTBlock(nn.Module):
    """MobileViT block: local 3x3 conv -> 1x1 to ``dim`` -> unfold into ``patch x patch`` patches ->
    ``depth`` transformer layers (pixels at the same position in every patch attend to each other) ->
    LayerNorm -> fold -> 1x1 conv back to ``c1`` -> 3x3 fusion conv over ``[input, result]``.

    ``(B, c1, H, W) -> (B, c1, H, W)``. If H or W is not a multiple of ``patch`` the map is resized
    (bilinear) to the next multiple for the transformer and back afterwards.
    YAML: ``[-1, depth, MobileViTBlock, [dim, head_dim, patch, mlp_ratio]]``.
    """

    def __init__(self, c1: int, dim: int, depth: int = 2, head_dim: int = 32, patch: int = 2,
                 mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if depth < 1 or patch < 1:
            raise ValueError(f"MobileViTBlock needs depth >= 1 and patch >= 1, got depth={depth}, patch={patch}")
        self.patch = patch
        self.conv_kxk = ConvBNAct(c1, c1, 3)
        self.conv_1x1 = nn.Conv2d(c1, dim, 1, bias=False)
        self.transformer = nn.Sequential(*(TransformerEncoder(dim, head_dim, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvBNAct(dim, c1, 1)
        self.conv_fusion = ConvBNAct(2 * c1, c1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y = self.conv_1x1(self.conv_kxk(x))
        b, c, h, w = y.shape
        p = self.patch
        # integer ceil (not math.ceil) keeps traced sizes symbolic; a traced graph resizes always (a
        # same-size bilinear resize is the identity) since the test would be frozen at the example size
        hp, wp = (h + p - 1) // p * p, (w + p - 1) // p * p
        resized = (hp, wp) != (h, w) or exporting()
        if resized:
            y = F.interpolate(y, size=(hp, wp), mode="bilinear", align_corners=False)
        nh, nw = hp // p, wp // p
        # (B*p*p, nh*nw, C): one sequence per pixel position inside the patch
        t = y.reshape(b, c, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, nh * nw, c)
        t = self.norm(self.transformer(t))
        y = t.reshape(b, p, p, nh, nw, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, hp, wp)
        if resized:
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        y = self.conv_proj(y)
        return self.conv_fusion(torch.cat((shortcut, y), dim=1))


# ------------------------------------------------------------------------------- whole backbone

# v1: stem, MV2 stages [(c, n, s)], ViT stages [(c, dim, depth, head_dim)], MV2 expansion, final 1x1 width
_V1 = {
    "xxs": (16, [(16, 1, 1), (24, 3, 2)], [(48, 64, 2, 16), (64, 80, 4, 20), (80, 96, 3, 24)], 2.0, 320),
    "xs": (16, [(32, 1, 1), (48, 3, 2)], [(64, 96, 2, 24), (80, 120, 4, 30), (96, 144, 3, 36)], 4.0, 384),
    "s": (16, [(32, 1, 1), (64, 3, 2)], [(96, 144, 2, 36), (128, 192, 4, 48), (160, 240, 3, 60)], 4.0, 640),
}
_V2 = {"v2_050": 0.5, "v2_075": 0.75, "v2_100": 1.0, "v2_125": 1.25, "v2_150": 1.5, "v2_175": 1.75, "v2_200": 2.0}
VARIANTS = tuple(_V1) + tuple(_V2)


def _wire_backbone(ctx: RowContext) -> Wired:
    return Wired([ctx.single_input(), *ctx.args], ctx.repeats, None)


@register(wiring=custom(_wire_backbone, "(c1, variant) -> list of 4 maps (P2..P5), channels in .out_channels",
                        pyramid(4, 8, 16, 32)))
class MobileViTBackbone(nn.Module):
    """A whole MobileViT v1 or v2 backbone as one row returning ``[P2, P3, P4, P5]`` feature maps.

    ``(B, c1, H, W) -> [(B, C2, H/4, W/4), (B, C3, H/8, W/8), (B, C4, H/16, W/16), (B, C5, H/32, W/32)]``
    with ``self.out_channels = [C2, C3, C4, C5]``; v1's P5 comes after the final 1x1 expansion (e.g.
    ``variant="s"`` gives ``[64, 96, 128, 640]``, the seed post's ``mobile_vit_small`` width list).
    Later rows pick maps with ``[row, 1, Index, [i]]``. ``variant``: "xxs", "xs", "s" (v1) or
    "v2_050" ... "v2_200" (v2 width multipliers 0.5 ... 2.0). Submodule names are timm's
    (``stem``, ``stages.{i}.{j}``, ``final_conv``), so timm weights load with a ``model.{row}.`` prefix.
    """

    def __init__(self, c1: int = 3, variant: str = "s") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown MobileViT variant {variant!r}; choose from {', '.join(VARIANTS)}")
        self.variant = variant
        stages: list[nn.Sequential] = []
        if variant in _V1:
            stem, mv2, vit, expansion, final = _V1[variant]
            self.stem = ConvBNAct(c1, stem, 3, 2)
            c = stem
            for c2, n, s in mv2:
                stages.append(nn.Sequential(*MV2Stage(c, c2, n, s, expansion).blocks))
                c = c2
            for c2, dim, depth, head_dim in vit:
                stages.append(nn.Sequential(InvertedResidual(c, c2, 2, expansion),
                                            MobileViTBlock(c2, dim, depth, head_dim, 2, 2.0)))
                c = c2
        else:
            m = _V2[variant]
            widths = [int(w * m) for w in (64, 128, 256, 384, 512)]
            self.stem = ConvBNAct(c1, int(32 * m), 3, 2)
            c = int(32 * m)
            for c2, n, s in [(widths[0], 1, 1), (widths[1], 2, 2)]:
                stages.append(nn.Sequential(*MV2Stage(c, c2, n, s, 2.0).blocks))
                c = c2
            for c2, depth in zip(widths[2:], (2, 4, 3)):
                stages.append(nn.Sequential(InvertedResidual(c, c2, 2, 2.0),
                                            MobileViTBlockV2(c2, round_channels(c2 * 0.5), depth, 2, 2.0)))
                c = c2
            final = 0
        self.stages = nn.Sequential(*stages)
        self.final_conv = ConvBNAct(c, final, 1) if final else None
        widths_out = [self._out_width(stages[i]) for i in (1, 2, 3, 4)]
        self.out_channels: list[int] = widths_out[:3] + [final or widths_out[3]]

    @staticmethod
    def _out_width(stage: nn.Sequential) -> int:
        first = stage[0]
        return first.conv3_1x1.conv.out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                outs.append(x)
        if self.final_conv is not None:
            outs[-1] = self.final_conv(outs[-1])
        return outs

