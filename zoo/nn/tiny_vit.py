"""TinyViT as YAML rows.

Paper: Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers",
arXiv:2207.10666. MobileSAM (arXiv:2306.14289) uses the 5M model as SAM's image encoder.

Every module here takes and returns ``(B, C, H, W)`` feature maps, so each stage is one YAML row
and nothing depends on the image size: windowed attention pads to a multiple of the window, and
the relative-position bias table (and the index into it) depend on the window size only.
BatchNorm uses PyTorch's default ``eps=1e-5`` like timm / MobileSAM (not :class:`zoo.nn.common.Conv`'s
1e-3), so :class:`Conv2d_BN` is its own :class:`~zoo.nn.conv_norm_act.ConvNormAct` subclass.

Row layout (downsampling is its own row, so timm's "downsample first" and MobileSAM's
"downsample last" stage layouts both map onto it)::

    row 0  PatchEmbed    [c]                     3 -> c,     H/4
    row 1  ConvLayer     [expand_ratio]          MBConv stage, depth = repeats
    row 2  PatchMerging  [c, stride]             H/8
    row 3  BasicLayer    [head_dim, window]      TinyViT blocks, depth = repeats
    row 4  PatchMerging  [c, stride]             H/16
    row 5  BasicLayer    [head_dim, window]
    row 6  PatchMerging  [c, stride]             H/32 (stride 2, classifier) or H/16 (stride 1, MobileSAM)
    row 7  BasicLayer    [head_dim, window]
    row 8  ClassifierHead      [nc, 0, True]           (classifier cfgs only)

State-dict correspondence (``R(k)`` = the k-th row of that type; with the layout above
PatchMerging k -> row 2k+2, BasicLayer k -> row 2k+3)::

    zoo                       timm ``tiny_vit_*``             MobileSAM ``image_encoder.*``
    model.0.conv1.conv/bn     patch_embed.conv1.conv/bn       patch_embed.seq.0.c/bn
    model.0.conv2.conv/bn     patch_embed.conv2.conv/bn       patch_embed.seq.2.c/bn
    model.1.blocks.j.convK    stages.0.blocks.j.convK         layers.0.blocks.j.convK      (.c -> .conv)
    model.{2i}.convK          stages.{i}.downsample.convK     layers.{i-1}.downsample.convK  (i = 1..3)
    model.{2i+1}.blocks.j.*   stages.{i}.blocks.j.*           layers.{i}.blocks.j.*          (i = 1..3)
    model.8.norm / .fc        head.norm / head.fc             norm_head / head (SAM skips these)

Inside a block the names are the reference ones: ``attn.{norm,qkv,proj,attention_biases}``,
``local_conv.{conv,bn}``, ``mlp.{norm,fc1,fc2}``. timm's Conv2d+BN is ``conv``/``bn`` (same as here);
MobileSAM's is ``c``/``bn``. ``attention_bias_idxs`` is a non-persistent buffer in all three.
See :mod:`zoo.nn.timm_keys` for the timm key map. :class:`TinyViTBackbone` is the whole backbone as
one row (a list of the four stage maps) and keeps timm's own names (``patch_embed``, ``stages.{i}.…``).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import attention, exporting
from zoo.nn.conv_norm_act import ConvNormAct
from zoo.nn.fast_cpu import linear_act
from zoo.registry import register
from zoo.wiring import (
    RowContext, Spatial, Wired, Wiring, checked_step, custom, fixed_stride, in_first, in_out, same_size, single_stride,
    stride_arg,
)

__all__ = [
    "Conv2d_BN", "PatchEmbed", "MBConv", "PatchMerging", "ConvLayer", "TinyViTAttention", "TinyViTMlp",
    "TinyViTBlock", "BasicLayer", "TinyViTStage", "TinyViTBackbone", "TINYVIT_VARIANTS", "heads_for", "BN_EPS",
]

BN_EPS = 1e-5  # PyTorch default, as in timm and MobileSAM


def heads_for(dim: int, head_dim: int) -> int:
    """Number of heads for a width-scaled ``dim``: ``dim / head_dim`` rounded, at least 1.

    Giving the head *dimension* (not the count) keeps every width valid: the attention's inner
    width is ``heads * head_dim``, which need not equal ``dim`` (the projections map between them).
    """
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}")
    return max(1, round(dim / head_dim))


def _keep_width(repeats_at: int | None = 1, spatial: Spatial | None = None) -> Wiring:
    """Stage rows that keep the channel count: ``Module(c1, [repeats,] *args)``, output ``c1``."""

    def wire(ctx: RowContext) -> Wired:
        c1 = ctx.single_input()
        args = [c1, *ctx.args]
        if repeats_at is None:
            return Wired(args, ctx.repeats, c1)
        args.insert(repeats_at, ctx.repeats)
        return Wired(args, 1, c1)

    rep = f", repeats -> arg {repeats_at}" if repeats_at is not None else ""
    return custom(wire, f"(c1, ...) -> c1{rep}", spatial)


@register(wiring=in_out(spatial=stride_arg(3)))
class Conv2d_BN(ConvNormAct):
    """timm's TinyViT Conv2d_BN: Conv2d (no bias) -> BatchNorm2d(eps 1e-5), no activation module (the
    blocks apply theirs with :meth:`then`). ``(B, c1, H, W) -> (B, c2, H/s, W/s)``.

    Padding is timm's ``k // 2`` (``autopad``'s ``(k - 1) // 2`` differs for even ``k``).
    ``bn_weight_init`` sets the BN scale (0 makes a residual branch start as the identity).
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__(c1, c2, k, s, k // 2, g, norm=partial(nn.BatchNorm2d, eps=BN_EPS), act=None)
        nn.init.constant_(self.bn.weight, bn_weight_init)


@register(wiring=in_out(spatial=fixed_stride(4)))
class PatchEmbed(nn.Module):
    """Two stride-2 3x3 Conv2d_BN with GELU between. ``(B, c1, H, W) -> (B, c2, H/4, W/4)``."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.conv1 = Conv2d_BN(c1, c2 // 2, 3, 2)
        self.act = nn.GELU()
        self.conv2 = Conv2d_BN(c2 // 2, c2, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1.then(self.act, x))


@register(wiring=in_out(spatial=same_size()))
class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> GELU -> 3x3 depthwise -> GELU -> 1x1 project, + input, GELU.

    ``(B, c1, H, W) -> (B, c2, H, W)``; the residual needs ``c1 == c2`` and is dropped otherwise.
    """

    def __init__(self, c1: int, c2: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(c1 * expand_ratio)
        if hidden < 1:
            raise ValueError(f"expand_ratio {expand_ratio} leaves no hidden channels for {c1} inputs")
        self.conv1 = Conv2d_BN(c1, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, g=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, c2, 1, bn_weight_init=0.0)  # zero-init: each block starts as identity
        self.act3 = nn.GELU()
        self.residual = c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.conv2.then(self.act2, self.conv1.then(self.act1, x)))
        return self.act3(y + x if self.residual else y)


@register(wiring=in_out(spatial=stride_arg(2, default=2)))
class PatchMerging(nn.Module):
    """1x1 conv -> GELU -> 3x3 depthwise (stride ``s``) -> GELU -> 1x1 conv.

    ``(B, c1, H, W) -> (B, c2, ceil(H/s), ceil(W/s))``. The published classifiers use ``s=2``
    everywhere; MobileSAM's last merge uses ``s=1`` so the encoder ends at H/16.
    """

    def __init__(self, c1: int, c2: int, s: int = 2) -> None:
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"PatchMerging stride must be 1 or 2, got {s}")
        self.conv1 = Conv2d_BN(c1, c2, 1)
        self.act = nn.GELU()
        self.conv2 = Conv2d_BN(c2, c2, 3, s, g=c2)
        self.conv3 = Conv2d_BN(c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2.then(self.act, self.conv1.then(self.act, x)))


@register(wiring=_keep_width(repeats_at=1, spatial=same_size()))
class ConvLayer(nn.Module):
    """TinyViT's first stage: ``depth`` MBConv blocks at constant width. ``(B, c, H, W) -> same``.

    YAML: ``[-1, depth, ConvLayer, [expand_ratio]]``.
    """

    def __init__(self, c1: int, depth: int = 2, expand_ratio: float = 4.0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"ConvLayer depth must be >= 1, got {depth}")
        self.blocks = nn.Sequential(*(MBConv(c1, c1, expand_ratio) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def window_bias_index(window: int) -> torch.Tensor:
    """``(w*w, w*w)`` index into a ``(heads, w*w)`` bias table for every pair of window positions.

    A pair's entry is ``|dy| * w + |dx|``, which is the order in which TinyViT's reference code first
    meets each offset, so the published tables load unchanged. Depends on the window size only.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    return dy * window + dx


@register(wiring=in_first(spatial=same_size()))
class TinyViTAttention(nn.Module):
    """Windowed multi-head self-attention with a learned relative-position bias (no residual).

    ``(B, C, H, W) -> (B, C, H, W)``. The map is zero-padded at the bottom/right to a multiple of
    ``window``, split into ``window x window`` windows, and each window attends within itself; the
    padded positions take part as keys (as in the reference) and are cropped afterwards.
    LayerNorm is applied inside (``self.norm``), on the padded tokens too, as the reference does.

    Args: ``dim`` channels, ``head_dim`` per-head width (heads = :func:`heads_for`), ``window``.
    """

    def __init__(self, dim: int, head_dim: int = 32, window: int = 7) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.heads = heads_for(dim, head_dim)
        self.head_dim = head_dim
        self.window = window
        self.scale = head_dim ** -0.5
        inner = self.heads * head_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)
        self.attention_biases = nn.Parameter(torch.zeros(self.heads, window * window))
        self.register_buffer("attention_bias_idxs", window_bias_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        win = self.window
        pad_b, pad_r = (-h) % win, (-w) % win
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        # a traced graph pads always (by amounts computed from its input's size, zero when none is
        # needed): the test here would be frozen at the example size
        if pad_b or pad_r or exporting():
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        nh, nw = hp // win, wp // win
        # (B*nh*nw, win*win, C): one row of tokens per window
        t = x.reshape(b, nh, win, nw, win, c).transpose(2, 3).reshape(b * nh * nw, win * win, c)
        t = self.attend(t)
        x = t.reshape(b, nh, nw, win, win, c).transpose(2, 3).reshape(b, hp, wp, c)
        # (B, H, W, C) memory is already channels-last: keep it so for a channels-last model
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return x[:, :h, :w].permute(0, 3, 1, 2).contiguous(memory_format=layout)

    def attend(self, t: torch.Tensor) -> torch.Tensor:
        """Attention within each window: ``(N, win*win, C) -> (N, win*win, C)``."""
        n, length, _ = t.shape
        qkv = linear_act(self.norm(t), self.qkv)
        # the reference lays qkv out per head as [q_h, k_h, v_h]
        q, k, v = qkv.view(n, length, self.heads, 3 * self.head_dim).transpose(1, 2).chunk(3, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, L, L)
        out = attention(q, k, v, bias=bias.to(q.dtype), scale=self.scale)
        return linear_act(out.transpose(1, 2).reshape(n, length, self.heads * self.head_dim), self.proj)


class TinyViTMlp(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear on the channels of ``(B, C, H, W)``; returns the same shape."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        y = linear_act(linear_act(self.norm(y), self.fc1, self.act), self.fc2)
        return y.permute(0, 3, 1, 2)


class TinyViTBlock(nn.Module):
    """``x + attn(x)`` -> 3x3 depthwise Conv2d_BN (no residual) -> ``x + mlp(x)``. ``(B, C, H, W) -> same``."""

    def __init__(self, dim: int, head_dim: int = 32, window: int = 7, mlp_ratio: float = 4.0,
                 local_conv_size: int = 3) -> None:
        super().__init__()
        self.attn = TinyViTAttention(dim, head_dim, window)
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, g=dim)
        self.mlp = TinyViTMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        x = self.local_conv(x)
        return x + self.mlp(x)


@register(wiring=_keep_width(repeats_at=1, spatial=same_size()))
class BasicLayer(nn.Module):
    """A TinyViT transformer stage: ``depth`` :class:`TinyViTBlock` at constant width.

    ``(B, C, H, W) -> (B, C, H, W)`` for any H, W. YAML:
    ``[-1, depth, BasicLayer, [head_dim, window, mlp_ratio, local_conv_size]]`` (the last two
    default to 4.0 and 3). Published TinyViTs use head_dim 32 in every stage.
    """

    def __init__(self, c1: int, depth: int = 2, head_dim: int = 32, window: int = 7, mlp_ratio: float = 4.0,
                 local_conv_size: int = 3) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"BasicLayer depth must be >= 1, got {depth}")
        self.blocks = nn.Sequential(
            *(TinyViTBlock(c1, head_dim, window, mlp_ratio, local_conv_size) for _ in range(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# ------------------------------------------------------------------------------- whole backbone

# embed dims and depths per stage; every published TinyViT uses head_dim 32 and windows 7/7/14/7
TINYVIT_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "5m": ((64, 128, 160, 320), (2, 2, 6, 2)),
    "11m": ((64, 128, 256, 448), (2, 2, 6, 2)),
    "21m": ((96, 192, 384, 576), (2, 2, 6, 2)),
}


class TinyViTStage(nn.Module):
    """``downsample`` (PatchMerging) then ``blocks`` (TinyViTBlocks): timm's stage layout."""

    def __init__(self, c1: int, c2: int, depth: int, window: int, stride: int) -> None:
        super().__init__()
        self.downsample = PatchMerging(c1, c2, stride)
        self.blocks = BasicLayer(c2, depth, 32, window).blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def _wire_tinyvit_backbone(ctx: RowContext) -> Wired:
    return Wired([ctx.single_input(), *ctx.args], ctx.repeats, None)


def _tinyvit_strides(args: list, strides: list) -> list[float]:
    last_stride = checked_step(args[2] if len(args) > 2 else 2, "last_stride")
    return [s * single_stride(strides) for s in (4, 8, 16, 16 * last_stride)]


@register(wiring=custom(_wire_tinyvit_backbone, "(c1, variant, last_stride) -> list of 4 maps, channels in .out_channels",
                        _tinyvit_strides))
class TinyViTBackbone(nn.Module):
    """A whole TinyViT as one row returning the four stage outputs.

    ``(B, c1, H, W) -> [(B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16), (B, C4, H/32, W/32)]``
    (``last_stride=1``, MobileSAM's layout, leaves the last map at H/16), ``self.out_channels`` the
    stage widths (e.g. ``[64, 128, 160, 320]`` for "5m"). ``variant``: "5m", "11m" or "21m".
    Submodules carry timm's names (``patch_embed``, ``stages.0.blocks``, ``stages.{i}.downsample``,
    ``stages.{i}.blocks``), so timm weights load under ``model.{row}.``; later rows pick maps with Index.
    """

    def __init__(self, c1: int = 3, variant: str = "5m", last_stride: int = 2) -> None:
        super().__init__()
        if variant not in TINYVIT_VARIANTS:
            raise ValueError(f"unknown TinyViT variant {variant!r}; choose from {', '.join(TINYVIT_VARIANTS)}")
        dims, depths = TINYVIT_VARIANTS[variant]
        self.patch_embed = PatchEmbed(c1, dims[0])
        stages: list[nn.Module] = [ConvLayer(dims[0], depths[0], 4.0)]
        for i, window in zip((1, 2, 3), (7, 14, 7)):
            stages.append(TinyViTStage(dims[i - 1], dims[i], depths[i], window, last_stride if i == 3 else 2))
        self.stages = nn.Sequential(*stages)
        self.out_channels: list[int] = list(dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


