"""RT-DETR building blocks: HGNet backbone blocks, ResNet layers, the hybrid encoder's RepC3 and AIFI.

RT-DETR: "DETRs Beat YOLOs on Real-time Object Detection", Zhao et al., arXiv:2304.08069.
The decoder head lives in :mod:`zoo.nn.rtdetr_decoder`; importing it here registers ``RTDETRDecoder``
with the rest of the family.

Attribute names follow Ultralytics' RT-DETR checkpoints (``stem1``..``stem4``, ``m``/``sc``/``ec``,
``cv1``/``cv2``/``m``, ``conv1``/``conv2``, ``ma``/``fc1``/``fc2``/``norm1``/``norm2``,
``layer``), so their state dicts load strictly. Every BatchNorm comes from :class:`~zoo.nn.common.Conv`
and therefore uses ``eps=1e-3, momentum=0.03`` as Ultralytics sets on every detection model.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import ULTRA_BN_EPS, ULTRA_BN_MOMENTUM, Conv, DWConv, fuse_conv_bn
from zoo.nn.fast_cpu import conv_act, linear_act
from zoo.nn.multihead_attention import MultiheadAttention
from zoo.nn.rtdetr_decoder import RTDETRDecoder
from zoo.registry import register
from zoo.wiring import (
    RowContext, Wired, checked_step, custom, fixed_stride, in_first, in_out, in_out_mid, same_size, single_stride, stride_arg,
)

__all__ = [
    "HGStem", "HGBlock", "LightConv", "RepConv", "RepC3", "MultiheadAttention", "AIFI",
    "sincos_position_embedding_2d", "ResNetBlock", "ResNetLayer", "RTDETRDecoder",
]


def max_pool_2x2_stride1(x: torch.Tensor) -> torch.Tensor:
    """``nn.MaxPool2d(2, stride=1)`` as two element-wise maxima of shifted views, across then down:
    ``(B, C, H, W) -> (B, C, H-1, W-1)``, same values, ~3x faster than the pooling kernel on a
    channels-last CPU map (one pass fewer and one map fewer than pairing the four corners).
    Used without autograd (the pooling op routes tied gradients differently)."""
    across = torch.maximum(x[..., :-1], x[..., 1:])
    return torch.maximum(across[..., :-1, :], across[..., 1:, :])


@register(wiring=in_out_mid(spatial=fixed_stride(4)))
class HGStem(nn.Module):
    """PP-HGNetV2 stem: two stride-2 stages with a max-pool / conv split in between.

    ``(B, c1, H, W) -> (B, c2, H/4, W/4)``. ``cm`` is the stem's working width.
    """

    def __init__(self, c1: int, cm: int, c2: int) -> None:
        super().__init__()
        if cm % 2:
            raise ValueError(f"HGStem hidden width cm must be even (it is halved in one branch), got {cm}")
        self.stem1 = Conv(c1, cm, 3, 2, act=nn.ReLU())
        self.stem2a = Conv(cm, cm // 2, 2, 1, 0, act=nn.ReLU())
        self.stem2b = Conv(cm // 2, cm, 2, 1, 0, act=nn.ReLU())
        self.stem3 = Conv(cm * 2, cm, 3, 2, act=nn.ReLU())
        self.stem4 = Conv(cm, c2, 1, 1, act=nn.ReLU())
        # kernel 2 / stride 1 on a map padded by one on the right and bottom keeps H x W
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, padding=0, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), [0, 1, 0, 1])
        branch = self.stem2b(F.pad(self.stem2a(x), [0, 1, 0, 1]))
        pooled = self.pool(x) if torch.is_grad_enabled() else max_pool_2x2_stride1(x)
        x = torch.cat([pooled, branch], dim=1)
        return self.stem4(self.stem3(x))


@register(wiring=in_out(spatial=same_size()))
class LightConv(nn.Module):
    """1x1 conv without activation followed by a depthwise ``k x k`` conv. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, k: int = 1, act: nn.Module | bool = nn.ReLU()) -> None:
        super().__init__()
        self.conv1 = Conv(c1, c2, 1, act=False)
        self.conv2 = DWConv(c2, c2, k, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


@register(wiring=in_out_mid(repeats_at=4, spatial=same_size()))
class HGBlock(nn.Module):
    """PP-HGNet block: ``n`` chained convs whose outputs are all concatenated, squeezed and excited.

    ``(B, c1, H, W) -> (B, c2, H, W)``; the residual is added when ``shortcut`` and ``c1 == c2``.
    """

    def __init__(self, c1: int, cm: int, c2: int, k: int = 3, n: int = 6, lightconv: bool = False,
                 shortcut: bool = False, act: nn.Module = nn.ReLU()) -> None:
        super().__init__()
        if c2 % 2:
            raise ValueError(f"HGBlock output channels must be even (squeezed to c2/2), got {c2}")
        block = LightConv if lightconv else Conv
        self.m = nn.ModuleList(block(c1 if i == 0 else cm, cm, k=k, act=act) for i in range(n))
        self.sc = Conv(c1 + n * cm, c2 // 2, 1, 1, act=act)
        self.ec = Conv(c2 // 2, c2, 1, 1, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for block in self.m:
            outs.append(block(outs[-1]))
        y = self.ec(self.sc(torch.cat(outs, dim=1)))
        return y + x if self.add else y


@register(wiring=in_out(spatial=stride_arg(3)))
class RepConv(nn.Module):
    """RepVGG-style conv: 3x3 + 1x1 (+ identity BN) branches in training, one 3x3 conv after :meth:`fuse`.

    ``(B, c1, H, W) -> (B, c2, H/s, W/s)``. ``p`` is the 3x3 branch's padding (the 1x1 branch uses
    ``p - k // 2`` so both produce the same size).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int = 1, g: int = 1, d: int = 1,
                 act: bool | nn.Module = True, bn: bool = False, deploy: bool = False) -> None:
        super().__init__()
        if k != 3 or p != 1 or d != 1:
            raise ValueError(f"RepConv folds a 1x1 branch into a 3x3 kernel; needs k=3, p=1, d=1 (got {k}, {p}, {d})")
        self.c1, self.c2, self.g = c1, c2, g
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()
        self.conv: nn.Conv2d | None = None
        if deploy:
            self.conv = nn.Conv2d(c1, c2, k, s, p, groups=g, bias=True)
            return
        self.conv1 = Conv(c1, c2, k, s, p=p, g=g, act=False)
        self.conv2 = Conv(c1, c2, 1, s, p=p - k // 2, g=g, act=False)
        identity = bn and c2 == c1 and s == 1
        self.bn = nn.BatchNorm2d(c1, eps=ULTRA_BN_EPS, momentum=ULTRA_BN_MOMENTUM) if identity else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:  # fused: conv, bias and act in one call on CPU
            return conv_act(x, self.conv, self.act)
        y = self.conv1(x) + self.conv2(x)
        if self.bn is not None:
            y = y + self.bn(x)
        return self.act(y)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold all branches into ``self.conv`` (idempotent)."""
        if self.conv is not None:
            return
        k3 = fuse_conv_bn(self.conv1.conv, self.conv1.bn) if self.conv1.bn is not None else self.conv1.conv
        k1 = fuse_conv_bn(self.conv2.conv, self.conv2.bn) if self.conv2.bn is not None else self.conv2.conv
        weight = k3.weight + F.pad(k1.weight, [1, 1, 1, 1])
        bias = (k3.bias if k3.bias is not None else 0) + (k1.bias if k1.bias is not None else 0)
        if self.bn is not None:
            # identity as a 3x3 kernel with a single 1 at the centre of each (in-group) channel
            per_group = self.c1 // self.g
            ident = torch.zeros_like(weight)
            idx = torch.arange(self.c1, device=weight.device)
            ident[idx, idx % per_group, 1, 1] = 1.0
            scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            weight = weight + ident * scale.view(-1, 1, 1, 1)
            bias = bias + self.bn.bias - self.bn.running_mean * scale
        conv = nn.Conv2d(self.c1, self.c2, 3, k3.stride, k3.padding, groups=self.g, bias=True)
        conv = conv.to(device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        conv.requires_grad_(False)
        self.conv = conv
        del self.conv1, self.conv2, self.bn


@register(wiring=in_out(repeats_at=2, spatial=same_size()))
class RepC3(nn.Module):
    """CSP block of RepConvs used in RT-DETR's CCFF neck. ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.m = nn.Sequential(*(RepConv(hidden, hidden) for _ in range(n)))
        self.cv3 = Conv(hidden, c2, 1, 1) if hidden != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.m(self.cv1(x)) + self.cv2(x))


def sincos_position_embedding_2d(h: int, w: int, dim: int, temperature: float = 10000.0,
                                 device: torch.device | None = None,
                                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding for a row-major ``h x w`` token grid: ``(1, h*w, dim)``.

    Channels are ``[sin(row*w_i), cos(row*w_i), sin(col*w_i), cos(col*w_i)]`` with
    ``w_i = temperature ** (-i / (dim/4))``. On square maps this equals Ultralytics' AIFI embedding
    exactly; on non-square maps every token gets its true (row, col) here.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    # broadcasts rather than repeat / repeat_interleave, whose ONNX forms need constant repeat counts:
    # an exported graph takes h and w from the input's size
    rows = torch.arange(h, dtype=torch.float32, device=device).view(-1, 1).expand(-1, w).reshape(-1)
    cols = torch.arange(w, dtype=torch.float32, device=device).view(1, -1).expand(h, -1).reshape(-1)
    out_r, out_c = rows[:, None] * omega[None], cols[:, None] * omega[None]
    emb = torch.cat([out_r.sin(), out_r.cos(), out_c.sin(), out_c.cos()], dim=1)
    return emb[None].to(dtype)


@register(wiring=in_first(spatial=same_size()))
class AIFI(nn.Module):
    """Attention-based intra-scale feature interaction: one post-norm transformer encoder layer over
    the tokens of a single (usually the stride-32) map, with a 2-D sin-cos position embedding built
    for whatever size the map has. ``(B, c1, H, W) -> (B, c1, H, W)``.
    """

    def __init__(self, c1: int, cm: int = 2048, num_heads: int = 8, dropout: float = 0.0,
                 act: nn.Module = nn.GELU(), normalize_before: bool = False) -> None:
        super().__init__()
        if c1 % 4:
            raise ValueError(f"AIFI width {c1} must be divisible by 4 (2-D sin-cos embedding)")
        self.ma = MultiheadAttention(c1, num_heads, dropout)
        self.fc1 = nn.Linear(c1, cm)
        self.fc2 = nn.Linear(cm, c1)
        self.norm1 = nn.LayerNorm(c1)
        self.norm2 = nn.LayerNorm(c1)
        self.drop = nn.Dropout(dropout)
        self.act = act
        self.normalize_before = normalize_before

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(linear_act(self.drop(linear_act(x, self.fc1, self.act)), self.fc2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pos = sincos_position_embedding_2d(h, w, c, device=x.device, dtype=x.dtype)
        src = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        # one tensor as query and key lets the attention project both in one GEMM
        if self.normalize_before:
            y = self.norm1(src)
            qk = y + pos
            src = src + self.drop(self.ma(qk, qk, y))
            src = src + self._ffn(self.norm2(src))
        else:
            qk = src + pos
            src = self.norm1(src + self.drop(self.ma(qk, qk, src)))
            src = self.norm2(src + self._ffn(src))
        return src.transpose(1, 2).reshape(b, c, h, w)


class ResNetBlock(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 stride s -> 1x1 x e) with a projection shortcut when shapes change.

    ``(B, c1, H, W) -> (B, e*c2, H/s, W/s)``.
    """

    def __init__(self, c1: int, c2: int, s: int = 1, e: int = 4) -> None:
        super().__init__()
        c3 = e * c2
        self.cv1 = Conv(c1, c2, k=1, s=1, act=True)
        self.cv2 = Conv(c2, c2, k=3, s=s, p=1, act=True)
        self.cv3 = Conv(c2, c3, k=1, act=False)
        self.shortcut = nn.Sequential(Conv(c1, c3, k=1, s=s, act=False)) if s != 1 or c1 != c3 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.cv3(self.cv2(self.cv1(x))) + self.shortcut(x))


def _wire_resnet_layer(ctx: RowContext) -> Wired:
    args = list(ctx.args)
    if len(args) < 4:
        raise ValueError("expects [c1, c2, stride, is_first, (n, e)]")
    c2, is_first = args[1], args[3]
    expansion = args[5] if len(args) > 5 else 4
    return Wired(args, ctx.repeats, c2 if is_first else c2 * expansion)


def _resnet_layer_stride(args: list, strides: list) -> float:
    """The stem (``is_first``) is a stride-2 conv and a stride-2 max-pool; a stage strides by ``s``."""
    return single_stride(strides) * (4 if args[3] else checked_step(args[2]))


@register(wiring=custom(_wire_resnet_layer, "(c1, c2, s, is_first, n, e) as written -> c2 if is_first else c2*e",
                        _resnet_layer_stride))
class ResNetLayer(nn.Module):
    """A ResNet stage: the 7x7 stem + max-pool when ``is_first``, else ``n`` bottlenecks (first has stride ``s``).

    ``is_first``: ``(B, c1, H, W) -> (B, c2, H/4, W/4)``; otherwise ``-> (B, e*c2, H/s, W/s)``.
    """

    def __init__(self, c1: int, c2: int, s: int = 1, is_first: bool = False, n: int = 1, e: int = 4) -> None:
        super().__init__()
        self.is_first = is_first
        if is_first:
            self.layer = nn.Sequential(Conv(c1, c2, k=7, s=2, p=3, act=True), nn.MaxPool2d(3, 2, 1))
        else:
            blocks = [ResNetBlock(c1, c2, s, e=e)] + [ResNetBlock(e * c2, c2, 1, e=e) for _ in range(n - 1)]
            self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

