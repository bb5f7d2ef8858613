"""Conv2d -> norm -> activation: the one implementation behind every family's conv block.

The families differ only in their defaults, so each subclasses :class:`ConvNormAct` and passes its
own (the class names stay, since YAML rows and the timm key maps refer to them):

* :class:`zoo.nn.common.Conv` (YOLOv10, RT-DETR): BatchNorm ``eps=1e-3, momentum=0.03``, SiLU,
  Ultralytics' ``autopad`` padding;
* :class:`zoo.nn.tiny_vit.Conv2d_BN` (TinyViT): BatchNorm ``eps=1e-5``, no activation of its own;
* :class:`zoo.nn.mobilevit_common.ConvBNAct` (MobileViT v1/v2): BatchNorm ``eps=1e-5``, SiLU.

The submodules are named ``conv``, ``bn``, ``act``, which is both the Ultralytics and the timm layout,
so every subclass loads those checkpoints without renaming. The same split of the conv from its norm
and activation is timm's ``layers/conv_bn_act.py``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from zoo.nn.fast_cpu import conv_act

__all__ = ["autopad", "fuse_conv_bn", "ConvNormAct"]


def autopad(k: int | tuple[int, int], p: int | None = None, d: int = 1) -> int | list[int]:
    """'Same' padding for stride 1: ``d * (k - 1) // 2`` per spatial dim unless ``p`` is given."""
    if p is not None:
        return p
    if isinstance(k, int):
        return d * (k - 1) // 2
    return [d * (x - 1) // 2 for x in k]


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new conv with ``bn`` (eval statistics) folded into its weight and bias."""
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    fused.weight.requires_grad_(False)
    fused.bias.requires_grad_(False)
    return fused


class ConvNormAct(nn.Module):
    """Conv2d (no bias) -> ``norm(c2)`` -> ``act``. ``(B, c1, H, W) -> (B, c2, H', W')``.

    ``p=None`` pads with :func:`autopad`. ``act=None`` registers no activation module at all (a
    subclass that never has one keeps its module tree and state dict as they were). After
    :meth:`fuse` a BatchNorm is folded into ``conv`` and ``bn`` is ``None``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, d: int = 1,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d, act: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn: nn.Module | None = norm(c2)
        self.act: nn.Module | None = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.then(self.act, x)

    def then(self, act: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        """``act(norm(conv(x)))`` with an activation the caller chooses (TinyViT keeps its GELUs outside
        the conv modules, as timm does). Once fused, conv, bias and activation are one oneDNN call on
        CPU (see :mod:`zoo.nn.fast_cpu`)."""
        if self.bn is None:
            return conv_act(x, self.conv, act)
        y = self.bn(self.conv(x))
        return y if act is None else act(y)

    def fuse(self) -> None:
        """Fold a BatchNorm into the conv (idempotent; other norms have no eval-time fold and stay)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = None
