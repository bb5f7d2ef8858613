"""Layers shared by several families: Conv+BN+act, depthwise conv, concat, output picking,
LayerNorm2d, MLP, attention and BN folding.

Ultralytics-style convolutions use BatchNorm with ``eps=1e-3, momentum=0.03`` (what Ultralytics'
``initialize_weights`` sets on every model it builds), so checkpoints trained there reproduce.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode as _get_dispatch_mode

from zoo.registry import register
from zoo.wiring import RowContext, Wired, concat, custom, io

__all__ = [
    "autopad", "fuse_conv_bn", "Conv", "DWConv", "Concat", "Index", "LayerNorm2d", "MLP", "attention",
    "ULTRA_BN_EPS", "ULTRA_BN_MOMENTUM",
]

ULTRA_BN_EPS = 1e-3
ULTRA_BN_MOMENTUM = 0.03


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


# Fast path for fused (inference) convs on CPU: one oneDNN call does conv + bias + SiLU (no separate
# pass over the output) with the weight pre-packed once into oneDNN's blocked layout (no weight
# reorder per call). Used only without autograd, outside FLOP counting and tracing, on fp32 CPU
# tensors; switch off with ``zoo.nn.common.FAST_CPU_CONV = False`` for the plain conv -> act path.
FAST_CPU_CONV = True
_MKLDNN = getattr(torch.ops, "mkldnn", None)
_CONV_POINTWISE = getattr(_MKLDNN, "_convolution_pointwise", None)
_REORDER_WEIGHT = getattr(_MKLDNN, "_reorder_convolution_weight", None)
# conv module -> (weight identity, packed weight); weak keys so dropped modules free their copies,
# and nothing is added to the modules (state dicts, deepcopy and pickling stay as they were)
_PACKED: "weakref.WeakKeyDictionary[nn.Conv2d, tuple[tuple, torch.Tensor]]" = weakref.WeakKeyDictionary()
_ACT_ATTR = {nn.SiLU: "swish", nn.Identity: "none", nn.ReLU: "relu"}


def fast_conv_attr(x: torch.Tensor, conv: nn.Conv2d, act: nn.Module) -> str | None:
    """oneDNN post-op name when ``act(conv(x))`` can run as one fused CPU call, else ``None``."""
    attr = _ACT_ATTR.get(type(act))
    if (attr is None or not FAST_CPU_CONV or _CONV_POINTWISE is None or x.device.type != "cpu"
            or x.dtype != torch.float32 or conv.weight.dtype != torch.float32 or conv.bias is None
            or conv.padding_mode != "zeros" or not isinstance(conv.padding, tuple) or x.dim() != 4):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        return None
    # FLOP counting (a dispatch mode) and torch.compile should see plain convs
    if _get_dispatch_mode() is not None or torch.compiler.is_compiling():
        return None
    return attr


def fast_conv(x: torch.Tensor, conv: nn.Conv2d, attr: str) -> torch.Tensor:
    """``act(conv(x))`` in one oneDNN call. ``(B, c1, H, W) -> (B, c2, H', W')``."""
    weight = conv.weight
    if _REORDER_WEIGHT is not None:
        # inference tensors (made under torch.inference_mode, e.g. by fuse()) keep no version counter
        version = -1 if weight.is_inference() else weight._version
        key = (weight.data_ptr(), version, tuple(weight.shape), weight.stride())
        cached = _PACKED.get(conv)
        if cached is None or cached[0] != key:
            packed = _REORDER_WEIGHT(weight.detach(), list(conv.padding), list(conv.stride), list(conv.dilation),
                                     conv.groups, list(x.shape))
            cached = (key, packed)
            _PACKED[conv] = cached
        weight = cached[1]
    return _CONV_POINTWISE(x, weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                           conv.groups, attr, [], "")


@register(wiring=io())
class Conv(nn.Module):
    """Conv2d -> BatchNorm2d -> activation. ``(B, c1, H, W) -> (B, c2, H/s, W/s)``.

    ``act``: ``True`` for SiLU, ``False`` for none, or an ``nn.Module``. After :meth:`fuse` the
    BN is folded into the conv and ``self.bn`` is ``None``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1, act: bool | nn.Module = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c2, eps=ULTRA_BN_EPS, momentum=ULTRA_BN_MOMENTUM)
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is None:
            attr = fast_conv_attr(x, self.conv, self.act)
            if attr is not None:
                return fast_conv(x, self.conv, attr)
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        if self.bn is not None:
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = None


@register(wiring=io())
class DWConv(Conv):
    """Depthwise(-ish) Conv: groups = gcd(c1, c2)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | nn.Module = True) -> None:
        import math

        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


@register(wiring=concat())
class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension`` (channels by default)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


def _wire_index(ctx: RowContext) -> Wired:
    if not ctx.args or not isinstance(ctx.args[0], int) or isinstance(ctx.args[0], bool):
        raise ValueError("expects [output_index]")
    if not isinstance(ctx.c_in, list):
        raise ValueError(f"picks an output of a multi-output row, but its input has a single output ({ctx.c_in} channels)")
    idx = ctx.args[0]
    if not -len(ctx.c_in) <= idx < len(ctx.c_in):
        raise ValueError(f"output index {idx} is out of range: the input row has {len(ctx.c_in)} outputs")
    return Wired([idx], 1, ctx.c_in[idx])


@register(wiring=custom(_wire_index, "(index) -> channels of that output"))
class Index(nn.Module):
    """Pick output ``index`` of a row that returns a list of feature maps (e.g. a whole backbone)."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[self.index]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of a ``(B, C, H, W)`` tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ``act`` between them (not after the last).

    Layers live in ``self.layers`` (the SAM / RT-DETR checkpoint layout). ``(..., in) -> (..., out)``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 act: type[nn.Module] = nn.ReLU, sigmoid_output: bool = False) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = act()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T * scale + bias) v`` on ``(..., N, d)`` tensors.

    Uses ``F.scaled_dot_product_attention`` (fused kernels on CPU and CUDA); the FLOP counter in
    :mod:`zoo.summary` counts it as its two matmuls.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
