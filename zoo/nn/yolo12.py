"""YOLO12 blocks: area attention (Tian et al., "YOLOv12: Attention-Centric Real-Time Object
Detectors", arXiv:2502.12524) as Ultralytics 8.4 implements it: AAttn, ABlock and the A2C2f stage.

Attribute names follow the Ultralytics checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import Conv, attention, exporting
from zoo.nn.yolo11 import C3k
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, in_out, passthrough, same_size

__all__ = ["AAttn", "ABlock", "A2C2f"]

# Ultralytics 8.4's parse_model appends (residual=True, mlp_ratio=1.2) to every A2C2f row at these scales
RESIDUAL_SCALES = frozenset({"l", "x"})
AREA_HEAD_DIM = 32  # A2C2f gives its area-attention blocks 32-channel heads


# not wired by Ultralytics' parse_model: a row naming AAttn or ABlock gets its args as written (dim included)
@register(wiring=passthrough(same_size()))
class AAttn(nn.Module):
    """Self-attention within ``area`` groups of consecutive tokens, plus a 7x7 depthwise positional
    conv on the values. ``(B, dim, H, W) -> (B, dim, H, W)``.

    Tokens are taken in row-major order and cut into ``area`` equal runs (horizontal strips when
    ``area`` divides ``H``); ``H * W`` must be divisible by ``area``. ``area <= 1`` attends globally.
    """

    def __init__(self, dim: int, num_heads: int, area: int = 1) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"AAttn: dim {dim} is not divisible by num_heads {num_heads}")
        self.area = area
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.all_head_dim = self.head_dim * num_heads
        self.qkv = Conv(dim, self.all_head_dim * 3, 1, act=False)
        self.proj = Conv(self.all_head_dim, dim, 1, act=False)
        self.pe = Conv(self.all_head_dim, self.all_head_dim, 7, 1, 3, g=self.all_head_dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        groups = self.area if self.area > 1 else 1
        if not exporting() and (h * w) % groups:
            raise ValueError(f"AAttn: {h}x{w} = {h * w} tokens do not split into {groups} equal areas")
        # channels of qkv are per head [q | k | v] (head_dim each): token-major, then one row per area
        tokens = self.qkv(x).flatten(2).transpose(1, 2)  # (B, N, 3C)
        tokens = tokens.reshape(b * groups, -1, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = tokens.split(self.head_dim, dim=-1)  # each (B*areas, heads, N/areas, head_dim)
        out = attention(q, k, v, scale=self.head_dim**-0.5)
        out, v = (self._to_map(t, b, h, w) for t in (out, v))
        return self.proj(out + self.pe(v))

    def _to_map(self, t: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """(B*areas, heads, N/areas, head_dim) -> (B, C, H, W), channels ordered head by head."""
        return t.transpose(1, 2).reshape(b, h, w, self.all_head_dim).permute(0, 3, 1, 2)


@register(wiring=passthrough(same_size()))
class ABlock(nn.Module):
    """Area attention then a 1x1 MLP (``mlp_ratio`` wide), both residual. ``(B, dim, H, W) -> same``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 1.2, area: int = 1) -> None:
        super().__init__()
        self.attn = AAttn(dim, num_heads=num_heads, area=area)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(Conv(dim, hidden, 1), Conv(hidden, dim, 1, act=False))
        self._init_conv_weights()

    @torch.no_grad()
    def _init_conv_weights(self) -> None:
        # the reference starts these convs from a truncated normal (std 0.02) with zero biases, not
        # PyTorch's default uniform; kept so training from scratch starts where Ultralytics' does
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def _wire_a2c2f(ctx: RowContext) -> Wired:
    wired = in_out(repeats_at=2)(ctx)
    if ctx.scale in RESIDUAL_SCALES:
        wired.args.extend((True, 1.2))  # appended after whatever the row gave, as Ultralytics does
    return wired


@register(wiring=custom(_wire_a2c2f, "(c1, c2*width, n, a2=True, area=1, residual=False, mlp_ratio=2.0, e=0.5, "
                                     "g=1, shortcut=True); (True, 1.2) appended at scales l/x", same_size()))
class A2C2f(nn.Module):
    """C2f-like stage: ``cv1`` to ``c_ = int(c2 * e)`` channels, then ``n`` blocks each feeding the
    next, every output concatenated into ``cv2``. Each block is two :class:`ABlock` with 32-channel
    heads (``a2``) or a :class:`~zoo.nn.yolo11.C3k`. With ``a2`` and ``residual`` the result is
    ``x + gamma * y`` (per-channel ``gamma``, starting at 0.01; needs ``c1 == c2``).
    ``(B, c1, H, W) -> (B, c2, H, W)``.
    """

    depthwise_detect_cls = True  # a Detect head after it gets the lightweight class branch (as in Ultralytics)

    def __init__(self, c1: int, c2: int, n: int = 1, a2: bool = True, area: int = 1, residual: bool = False,
                 mlp_ratio: float = 2.0, e: float = 0.5, g: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        hidden = int(c2 * e)
        if hidden % AREA_HEAD_DIM:
            raise ValueError(f"A2C2f: hidden width int(c2 * e) = {hidden} must be a multiple of {AREA_HEAD_DIM}")
        if a2 and residual and c1 != c2:
            raise ValueError(f"A2C2f with a residual keeps the channel count: got c1={c1}, c2={c2}")
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv((1 + n) * hidden, c2, 1)
        self.gamma = nn.Parameter(torch.full((c2,), 0.01)) if a2 and residual else None
        self.m = nn.ModuleList(
            nn.Sequential(*(ABlock(hidden, hidden // AREA_HEAD_DIM, mlp_ratio, area) for _ in range(2)))
            if a2 else C3k(hidden, hidden, 2, shortcut, g)
            for _ in range(n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for block in self.m:
            y.append(block(y[-1]))
        out = self.cv2(torch.cat(y, 1))
        if self.gamma is not None:
            return x + self.gamma.view(1, -1, 1, 1) * out
        return out
