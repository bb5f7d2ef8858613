"""YOLOv10 blocks and the NMS-free detection head.

Paper: Wang et al., "YOLOv10: Real-Time End-to-End Object Detection", arXiv:2405.14458.
It reuses C2f and DFL (:mod:`zoo.nn.yolov8`) and SPPF (:mod:`zoo.nn.yolov5`). Attribute names follow
the Ultralytics checkpoints so their weights load unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import Conv, attention
from zoo.nn.fast_cpu import conv_act
from zoo.nn.yolo_detect import Detect
from zoo.nn.yolov8 import C2f
from zoo.registry import register
from zoo.wiring import in_out, multi_input, not_a_map, same_size, stride_arg

__all__ = ["SCDown", "RepVGGDW", "CIB", "C2fCIB", "Attention", "PSA", "psa_heads", "v10Detect"]


@register(wiring=in_out(spatial=stride_arg(3, default=2)))
class SCDown(nn.Module):
    """Spatial-channel decoupled downsampling: 1x1 channel conv, then a strided depthwise conv."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.cv2 = Conv(c2, c2, k=k, s=s, g=c2, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


class RepVGGDW(nn.Module):
    """7x7 + 3x3 depthwise branches, summed then SiLU; :meth:`fuse` merges them into one 7x7 conv."""

    def __init__(self, ed: int) -> None:
        super().__init__()
        self.conv: nn.Module = Conv(ed, ed, 7, 1, 3, g=ed, act=False)
        self.conv1: Conv | None = Conv(ed, ed, 3, 1, 1, g=ed, act=False)
        self.dim = ed
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is None:  # fused into one plain 7x7 depthwise nn.Conv2d: conv, bias and SiLU in one call
            return conv_act(x, self.conv, self.act)
        return self.act(self.conv(x) + self.conv1(x))

    @torch.no_grad()
    def fuse(self) -> None:
        if self.conv1 is None:
            return
        big, small = self.conv, self.conv1
        big.fuse()
        small.fuse()
        merged = big.conv
        pad = (merged.kernel_size[0] - small.conv.kernel_size[0]) // 2
        merged.weight.add_(F.pad(small.conv.weight, [pad] * 4))
        merged.bias.add_(small.conv.bias)
        self.conv = merged
        self.conv1 = None


class CIB(nn.Module):
    """Compact inverted block: depthwise/pointwise stack, optionally a large-kernel RepVGGDW."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, lk: bool = False) -> None:
        super().__init__()
        hidden = int(c2 * e)
        mid = RepVGGDW(2 * hidden) if lk else Conv(2 * hidden, 2 * hidden, 3, g=2 * hidden)
        self.cv1 = nn.Sequential(
            Conv(c1, c1, 3, g=c1),
            Conv(c1, 2 * hidden, 1),
            mid,
            Conv(2 * hidden, c2, 1),
            Conv(c2, c2, 3, g=c2),
        )
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return x + y if self.add else y


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class C2fCIB(C2f):
    """C2f with CIB blocks in place of bottlenecks. Args ``(c1, c2, n, shortcut, lk, g, e)``."""

    depthwise_detect_cls = True  # a Detect head after it gets the lightweight class branch (as in Ultralytics)

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, lk: bool = False,
                 g: int = 1, e: float = 0.5) -> None:
        self._lk = lk
        super().__init__(c1, c2, n, shortcut, g, e)

    def _block(self, shortcut: bool, g: int) -> nn.Module:
        return CIB(self.c, self.c, shortcut, e=1.0, lk=self._lk)


class Attention(nn.Module):
    """Multi-head self-attention on a feature map, with a depthwise positional conv on the values.

    ``(B, dim, H, W) -> (B, dim, H, W)``; keys/queries use ``key_dim = head_dim * attn_ratio``.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        qkv_channels = dim + 2 * self.key_dim * num_heads
        self.qkv = Conv(dim, qkv_channels, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = h * w
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, n).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2
        )
        # (B, heads, d, N) -> (B, heads, N, d) for the fused kernel, then back to channel-major
        out = attention(q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1), scale=self.scale)
        out = out.transpose(-2, -1).reshape(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


def psa_heads(channels: int) -> int:
    """Head count of the PSA attention (YOLOv10's PSA, YOLO11's PSABlock stacks): 64-wide heads, at
    least one (so width scaling keeps it valid)."""
    return max(channels // 64, 1)


@register(wiring=in_out(spatial=same_size()))
class PSA(nn.Module):
    """Partial self-attention: attention + FFN on half the channels. ``(B, c1, H, W) -> same``.

    Heads have a fixed dimension of 64 (``heads = c // 64``, at least 1) so width scaling keeps
    the attention valid.
    """

    def __init__(self, c1: int, c2: int, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(f"PSA keeps the channel count: got c1={c1}, c2={c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.attn = Attention(self.c, attn_ratio=0.5, num_heads=psa_heads(self.c))
        self.ffn = nn.Sequential(Conv(self.c, self.c * 2, 1), Conv(self.c * 2, self.c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((a, b), 1))


@register(wiring=multi_input(spatial=not_a_map()))
class v10Detect(Detect):  # noqa: N801  (the YAML / checkpoint name)
    """YOLOv10 head: a :class:`~zoo.nn.yolo_detect.Detect` that always has the one-to-one branch and the
    lightweight class branch, with YOLOv10's argument order ``(nc, ch, reg_max, end2end)``.

    Eval: ``raw["decoded"]`` is the one-to-one output ``(B, 4 + nc, A)`` and the detections its NMS-free
    top-``max_det``. ``end2end=False`` decodes the one-to-many branch instead and runs NMS on it (what
    Ultralytics 8.4 returns when its head's ``end2end`` is off). The one-to-one branch sees detached
    features (the paper's consistent dual assignment).
    """

    box_prior = 1.0  # YOLOv10's initial box-bin logits

    def __init__(self, nc: int = 80, ch: Sequence[int] = (), reg_max: int = 16, end2end: bool = True) -> None:
        super().__init__(nc, reg_max, True, ch, legacy=False)
        self.end2end = end2end
