"""Layers shared by several families: Conv+BN+act, depthwise conv, concat, output picking,
LayerNorm2d, MLP and attention. ``autopad`` and ``fuse_conv_bn`` live with the conv block in
:mod:`zoo.nn.conv_norm_act` and are re-exported here for the families that import them from here.

Ultralytics-style convolutions use BatchNorm with ``eps=1e-3, momentum=0.03`` (what Ultralytics'
``initialize_weights`` sets on every model it builds), so checkpoints trained there reproduce.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode as _get_dispatch_mode

from zoo.nn.conv_norm_act import ConvNormAct, autopad, fuse_conv_bn
from zoo.nn.fast_cpu import linear_act
from zoo.registry import register
from zoo.wiring import RowContext, Wired, build_activation, concat, custom, in_out, picked_output, stride_arg

__all__ = [
    "autopad", "fuse_conv_bn", "Conv", "DWConv", "Concat", "Index", "LayerNorm2d", "MLP", "attention",
    "ULTRA_BN_EPS", "ULTRA_BN_MOMENTUM", "exporting",
]

ULTRA_BN_EPS = 1e-3
ULTRA_BN_MOMENTUM = 0.03



def exporting() -> bool:
    """Whether the forward running now is being traced into a graph (TorchScript tracing, which
    ``torch.onnx.export(dynamo=False)`` uses, or ``torch.export``, which the dynamo exporter uses).

    Layers switch to their graph-friendly forms then: sizes stay symbolic instead of being read as
    Python ints, caches keyed by sizes are bypassed, and CPU-only kernels give way to standard ops.
    """
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


@register(wiring=in_out(spatial=stride_arg(3)))
class Conv(ConvNormAct):
    """Ultralytics' Conv: Conv2d -> BatchNorm2d(eps 1e-3, momentum 0.03) -> activation.
    ``(B, c1, H, W) -> (B, c2, H/s, W/s)``.

    ``act``: ``True`` for the default activation (SiLU unless the config's ``activation:`` names
    another, see :func:`default_activation`), ``False`` for none (an ``nn.Identity``, as Ultralytics registers), or an
    ``nn.Module``. After :meth:`fuse` the BN is folded into the conv and ``self.bn`` is ``None``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1, act: bool | nn.Module = True) -> None:
        activation = build_activation() if act is True else act if isinstance(act, nn.Module) else nn.Identity()
        super().__init__(c1, c2, k, s, p, g, d, norm=partial(nn.BatchNorm2d, eps=ULTRA_BN_EPS,
                                                              momentum=ULTRA_BN_MOMENTUM), act=activation)


@register(wiring=in_out(spatial=stride_arg(3)))
class DWConv(Conv):
    """Depthwise(-ish) Conv: groups = gcd(c1, c2)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | nn.Module = True) -> None:
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


@register(wiring=custom(_wire_index, "(index) -> channels of that output", picked_output))
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
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            # channels are the innermost dim in memory: one fused layer_norm pass, output stays channels-last.
            # The shape comes from the weight, not x: a traced size would be refused by the ONNX exporter
            # (a 1-channel NCHW tensor also counts as channels-last, so tracing reaches this branch)
            y = F.layer_norm(x.permute(0, 2, 3, 1), (self.weight.shape[0],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
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
            x = linear_act(x, layer, self.act if i < last else None)
        return torch.sigmoid(x) if self.sigmoid_output else x


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T * scale + bias) v`` on ``(..., N, d)`` tensors.

    Uses ``F.scaled_dot_product_attention`` (fused kernels on CPU and CUDA); the FLOP counter in
    :mod:`zoo.summary` counts it as its two matmuls. ``bias`` broadcasts against ``(..., Nq, Nk)``; it is
    given leading singleton dims up to ``q``'s rank because PyTorch's fused CPU kernel only takes a mask
    of the same rank (a lower-rank mask falls back to the unfused path, ~3x slower for TinyViT windows).
    """
    if bias is not None and bias.dim() < q.dim():
        bias = bias.view((1,) * (q.dim() - bias.dim()) + tuple(bias.shape))
    dk, dv = q.shape[-1], v.shape[-1]
    if dk != dv and q.device.type == "cpu" and _get_dispatch_mode() is None:  # FLOP counts: unpadded
        # the fused CPU kernel needs one head dim for q, k and v; otherwise PyTorch takes the unfused
        # path with a "safe" softmax (YOLOv10's PSA: keys 32, values 64 wide; 0.98 -> 0.59 ms at
        # 20x20). Zero columns change neither q k^T nor, once sliced off, the output.
        scale = dk**-0.5 if scale is None else scale
        width = max(dk, dv)
        q, k, v = (t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1])) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)[..., :dv]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
