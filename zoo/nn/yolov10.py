"""YOLOv10 blocks and the NMS-free detection head.

Paper: Wang et al., "YOLOv10: Real-Time End-to-End Object Detection", arXiv:2405.14458.
It reuses C2f and DFL (:mod:`zoo.nn.yolov8`) and SPPF (:mod:`zoo.nn.yolov5`). Attribute names follow
the Ultralytics checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import Conv, attention, exporting
from zoo.nn.fast_cpu import conv_act
from zoo.nn.heads import DEFAULT_MAX_DET
from zoo.nn.yolov8 import DFL, C2f
from zoo.ops.anchors import dist2bbox, make_anchors
from zoo.ops.boxes import xywh_to_xyxy
from zoo.registry import register
from zoo.wiring import in_out, multi_input, not_a_map, same_size, stride_arg

__all__ = ["SCDown", "RepVGGDW", "CIB", "C2fCIB", "Attention", "PSA", "v10Detect", "v10_postprocess"]


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
        self.attn = Attention(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1))
        self.ffn = nn.Sequential(Conv(self.c, self.c * 2, 1), Conv(self.c * 2, self.c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((a, b), 1))


def v10_postprocess(preds: torch.Tensor, max_det: int = 300, nc: int | None = None) -> torch.Tensor:
    """NMS-free top-k: ``(B, A, 4+nc)`` decoded xywh + probabilities -> ``(B, max_det, 6)``.

    Each row is ``x1, y1, x2, y2, score, class`` (pixels), best first. First the ``max_det``
    anchors with the highest class score are kept, then the best ``max_det`` (anchor, class)
    pairs among them, so one anchor may report two classes as the one-to-one head allows.
    """
    b, a, c = preds.shape
    nc = c - 4 if nc is None else nc
    boxes, scores = preds[..., :4], preds[..., 4:4 + nc]
    k = min(max_det, a)
    best_anchor = scores.amax(-1).topk(k, dim=-1).indices  # (B, k)
    boxes = boxes.gather(1, best_anchor[..., None].expand(-1, -1, 4))
    scores = scores.gather(1, best_anchor[..., None].expand(-1, -1, nc))
    top_scores, flat = scores.flatten(1).topk(min(max_det, k * nc), dim=-1)
    anchor_idx, cls = flat // nc, flat % nc
    xywh = boxes.gather(1, anchor_idx[..., None].expand(-1, -1, 4))
    xyxy = xywh_to_xyxy(xywh)
    return torch.cat((xyxy, top_scores[..., None], cls[..., None].to(xyxy.dtype)), -1)


def _box_branch(c_in: int, hidden: int, reg_max: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, hidden, 3), Conv(hidden, hidden, 3), nn.Conv2d(hidden, 4 * reg_max, 1))


def _cls_branch(c_in: int, hidden: int, nc: int) -> nn.Sequential:
    # YOLOv10's lightweight classification branch: depthwise + pointwise pairs
    return nn.Sequential(
        nn.Sequential(Conv(c_in, c_in, 3, g=c_in), Conv(c_in, hidden, 1)),
        nn.Sequential(Conv(hidden, hidden, 3, g=hidden), Conv(hidden, hidden, 1)),
        nn.Conv2d(hidden, nc, 1),
    )


@register(wiring=multi_input(spatial=not_a_map()))
class v10Detect(nn.Module):  # noqa: N801  (the YAML / checkpoint name)
    """YOLOv10 head with one-to-many (``cv2``/``cv3``) and one-to-one (``one2one_*``) branches.

    Input: feature maps ``[(B, ch[i], H_i, W_i)]``. Training: ``{"one2many": [...], "one2one": [...]}``
    with per-level ``(B, 4*reg_max + nc, H_i, W_i)``. Eval (the detection contract of
    :mod:`zoo.nn.heads`): ``(detections, raw)``; ``detections (B, K, 6)`` are the :func:`v10_postprocess`
    top-``max_det`` of ``raw["decoded"]``, the one-to-one output ``(B, 4 + nc, A)``: boxes xywh in
    input pixels, then class probabilities. ``raw`` also holds the per-level maps ``"one2one"`` (and
    ``"one2many"`` until :meth:`drop_training_branches`) that the loss scores. The one-to-one branch
    sees detached features (the paper's consistent dual assignment).

    ``end2end=False`` makes ``raw["decoded"]`` decode the one-to-many branch instead (NMS needed);
    that is what Ultralytics 8.4 returns when its head's ``end2end`` is off.
    """

    task = "detect"
    loss = "yolov10"  # its training loss: the "yolov10" entry of zoo.engine.tasks.heads.HEADS

    def __init__(self, nc: int = 80, ch: Sequence[int] = (), reg_max: int = 16, end2end: bool = True) -> None:
        super().__init__()
        self.end2end = end2end
        self.max_det = DEFAULT_MAX_DET
        if not ch:
            raise ValueError("v10Detect needs the channels of its input levels")
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ValueError(f"v10Detect needs a positive class count nc, got {nc!r}")
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        box_hidden = max(16, ch[0] // 4, reg_max * 4)
        cls_hidden = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(_box_branch(c, box_hidden, reg_max) for c in ch)
        self.cv3 = nn.ModuleList(_cls_branch(c, cls_hidden, nc) for c in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.one2one_cv2 = nn.ModuleList(_box_branch(c, box_hidden, reg_max) for c in ch)
        self.one2one_cv3 = nn.ModuleList(_cls_branch(c, cls_hidden, nc) for c in ch)
        self._anchor_cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def set_strides(self, strides: list[float]) -> None:
        self.stride.copy_(torch.tensor(strides, dtype=self.stride.dtype))
        self.bias_init()

    @torch.no_grad()
    def bias_init(self, image_size: int = 640) -> None:
        """Prior biases: box logits 1.0; class logits for ~5 objects per image (YOLO convention)."""
        for branches_box, branches_cls in ((self.cv2, self.cv3), (self.one2one_cv2, self.one2one_cv3)):
            for box, cls, s in zip(branches_box, branches_cls, self.stride.tolist()):
                box[-1].bias.fill_(1.0)
                cls[-1].bias[: self.nc] = math.log(5 / self.nc / (image_size / max(s, 1.0)) ** 2)

    def drop_training_branches(self) -> None:
        """Deploy: the one-to-one branch alone makes the predictions."""
        self.cv2 = None
        self.cv3 = None

    @staticmethod
    def _levels(feats: Sequence[torch.Tensor], box: nn.ModuleList, cls: nn.ModuleList) -> list[torch.Tensor]:
        return [torch.cat((b(f), c(f)), 1) for f, b, c in zip(feats, box, cls)]

    def forward(self, x: list[torch.Tensor], *, max_det: int | None = None):
        """``max_det`` (eval only): detections to return per image, default :attr:`max_det`."""
        one2one = self._levels([f.detach() for f in x], self.one2one_cv2, self.one2one_cv3)
        raw = {"one2one": one2one}
        if self.cv2 is not None:
            raw["one2many"] = self._levels(x, self.cv2, self.cv3)
        if self.training:
            return raw
        decoded = self.decode(raw["one2many"] if not self.end2end and "one2many" in raw else one2one)
        limit = self.max_det if max_det is None else max_det
        # decoded is a transposed view of a contiguous (B, A, 4 + nc): the top-k reads that directly
        preds = decoded.transpose(1, 2)
        if exporting():
            # a traced graph's top-k sizes are constants of the example: max_det filler anchors scoring
            # -1 (below every real score, so they are never picked before one) keep them valid for
            # inputs with fewer anchors; an input with A * nc >= max_det gives the eager detections
            preds = F.pad(preds, (0, 0, 0, limit), value=-1.0)
        detections = v10_postprocess(preds, limit)
        return detections, {"decoded": decoded, **raw}

    def decode(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Per-level raw maps -> ``(B, 4 + nc, A)``: xywh pixels then class probabilities.

        Worked out anchor-major and returned as a transposed view of a contiguous ``(B, A, 4 + nc)``
        (what the top-k step reads): channels-last maps flatten to ``(B, H*W, no)`` without a copy and
        the DFL softmax runs over contiguous bins.
        """
        flat = torch.cat([lvl.flatten(2).transpose(1, 2) for lvl in levels], 1)  # (B, A, no)
        box, cls = flat.split((4 * self.reg_max, self.nc), -1)
        anchors, strides = self._anchors(levels)
        dist = self.dfl.expectation(box) if isinstance(self.dfl, DFL) else box
        xywh = dist2bbox(dist, anchors, xywh=True, dim=-1) * strides
        return torch.cat((xywh, cls.sigmoid()), -1).transpose(1, 2)

    def _anchors(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if exporting():
            # an exported graph computes its anchors from the input's (possibly symbolic) sizes; a
            # cached tensor would be baked in as a constant of the example size (or leak a fake tensor)
            return make_anchors(levels, self.stride, 0.5)
        key = (tuple(lvl.shape[-2:] for lvl in levels), levels[0].device, levels[0].dtype)
        if self._anchor_cache is None or self._anchor_cache[0] != key:
            anchors, strides = make_anchors(levels, self.stride, 0.5)
            self._anchor_cache = (key, anchors, strides)
        return self._anchor_cache[1], self._anchor_cache[2]
