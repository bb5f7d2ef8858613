"""The convolutional parts MobileViT v1 and v2 share: the Conv-BN-SiLU block, MobileNetV2 inverted
residuals (MV2) and their stages, and timm's channel rounding.

Papers: Mehta & Rastegari, arXiv:2110.02178 (v1) and arXiv:2206.02680 (v2); Sandler et al.,
"MobileNetV2", arXiv:1801.04381. Both family files import from here (v1's whole-backbone row also
imports v2's block), so neither imports the other's shared pieces back. BatchNorm uses PyTorch's
default ``eps=1e-5`` (timm / ml-cvnets).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.conv_norm_act import ConvNormAct
from zoo.registry import register
from zoo.wiring import in_out, stride_arg

__all__ = ["round_channels", "ConvBNAct", "InvertedResidual", "MV2Stage"]


def round_channels(v: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` but never more than 10% below ``v`` (timm's rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@register(wiring=in_out(spatial=stride_arg(3)))
class ConvBNAct(ConvNormAct):
    """timm's ConvNormAct as MobileViT uses it: Conv2d (no bias, padding ``k // 2``) -> BatchNorm2d(eps 1e-5)
    -> SiLU (or ``nn.Identity`` with ``act=False``). ``(B, c1, H, W) -> (B, c2, H/s, W/s)``.

    Padding is timm's ``k // 2`` (``autopad``'s ``(k - 1) // 2`` differs for even ``k``).
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True) -> None:
        super().__init__(c1, c2, k, s, k // 2, g, norm=nn.BatchNorm2d, act=nn.SiLU() if act else nn.Identity())


@register(wiring=in_out(spatial=stride_arg(2)))
class InvertedResidual(nn.Module):
    """MobileNetV2 block (MV2): 1x1 expand -> SiLU -> 3x3 depthwise (stride ``s``) -> SiLU -> 1x1 linear.

    ``(B, c1, H, W) -> (B, c2, H/s, W/s)``; residual when ``s == 1`` and ``c1 == c2``. The hidden width is
    ``round_channels(c1 * expansion)``.
    """

    def __init__(self, c1: int, c2: int, s: int = 1, expansion: float = 4.0) -> None:
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {s}")
        hidden = round_channels(c1 * expansion)
        self.conv1_1x1 = ConvBNAct(c1, hidden, 1)
        self.conv2_kxk = ConvBNAct(hidden, hidden, 3, s, g=hidden)
        self.conv3_1x1 = ConvBNAct(hidden, c2, 1, act=False)
        self.residual = s == 1 and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + y if self.residual else y


@register(wiring=in_out(repeats_at=2, spatial=stride_arg(3)))
class MV2Stage(nn.Module):
    """``n`` InvertedResidual blocks; the first maps ``c1 -> c2`` with stride ``s``, the rest keep ``c2``.

    ``(B, c1, H, W) -> (B, c2, H/s, W/s)``. YAML: ``[-1, n, MV2Stage, [c2, s, expansion]]``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, s: int = 1, expansion: float = 4.0) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"MV2Stage needs at least one block, got n={n}")
        self.blocks = nn.Sequential(
            *(InvertedResidual(c1 if j == 0 else c2, c2, s if j == 0 else 1, expansion) for j in range(n))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
