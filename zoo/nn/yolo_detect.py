"""The YOLO detection head (``Detect``) of YOLOv3-v9, YOLO11, YOLO12 and YOLO26; YOLOv10's head builds on it.

Anchor-free, decoupled: per input level a box branch (``cv2``: 4 x ``reg_max`` distance bins, turned
into distances by the DFL integral, or raw distances when ``reg_max`` is 1) and a class branch (``cv3``).
Two class-branch layouts exist: the *legacy* one of YOLOv3/v5/v8/v9 files (two 3x3 convs) and the
lightweight depthwise one of YOLO11 and later (each a depthwise 3x3 then a pointwise conv). Ultralytics
picks by the blocks of the model, which the wiring here reproduces: a model containing a block that
declares ``depthwise_detect_cls = True`` (C3k2, A2C2f, C2fCIB) gets the lightweight branch.

An ``end2end`` head also has one-to-one copies of both branches (``one2one_cv2`` / ``one2one_cv3``, on
detached features) whose predictions need no NMS (YOLOv10's consistent dual assignment, YOLO26).
Attribute names follow Ultralytics' checkpoints so their weights load unchanged.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import Conv, exporting
from zoo.nn.heads import DEFAULT_MAX_DET
from zoo.nn.yolov8 import DFL
from zoo.ops.anchors import dist2bbox, make_anchors
from zoo.ops.detections import DEFAULT_MAX_CANDIDATES, DEFAULT_NMS_CONF, DEFAULT_NMS_IOU, nms_detections, topk_detections
from zoo.registry import register
from zoo.wiring import RowContext, Wired, custom, not_a_map

__all__ = ["Detect", "box_branch", "light_cls_branch"]


def box_branch(c_in: int, hidden: int, reg_max: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, hidden, 3), Conv(hidden, hidden, 3), nn.Conv2d(hidden, 4 * reg_max, 1))


def light_cls_branch(c_in: int, hidden: int, nc: int) -> nn.Sequential:
    """YOLOv10/11's class branch: two depthwise 3x3 + pointwise pairs, then the class logits."""
    return nn.Sequential(
        nn.Sequential(Conv(c_in, c_in, 3, g=c_in), Conv(c_in, hidden, 1)),
        nn.Sequential(Conv(hidden, hidden, 3, g=hidden), Conv(hidden, hidden, 1)),
        nn.Conv2d(hidden, nc, 1),
    )


def legacy_cls_branch(c_in: int, hidden: int, nc: int) -> nn.Sequential:
    """YOLOv8's class branch: two full 3x3 convs, then the class logits."""
    return nn.Sequential(Conv(c_in, hidden, 3), Conv(hidden, hidden, 3), nn.Conv2d(hidden, nc, 1))


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def _wire_detect(ctx: RowContext) -> Wired:
    """Ultralytics' rows give ``[nc]``; ``reg_max`` and ``end2end`` come from the config's top level
    (defaults 16 and false) unless the row gives them as its 2nd and 3rd args."""
    args = list(ctx.args)
    if not args or len(args) > 3:
        raise ValueError("expects [nc] (reg_max and end2end from the config's top level), or [nc, reg_max, end2end]")
    settings = ctx.settings
    reg_max = args[1] if len(args) > 1 else settings.get("reg_max", 16)
    end2end = args[2] if len(args) > 2 else (settings.get("end2end") or False)
    if isinstance(reg_max, bool) or not isinstance(reg_max, int) or reg_max < 1:
        raise ValueError(f"reg_max must be a positive integer (DFL bins; 1 for none), got {reg_max!r}")
    _flag(end2end, "end2end")
    chs = ctx.c_in if isinstance(ctx.c_in, list) else [ctx.c_in]
    legacy = not any(getattr(cls, "depthwise_detect_cls", False) for cls in ctx.earlier)
    return Wired([args[0], reg_max, end2end, list(chs)], ctx.repeats, None, {"legacy": legacy})


@register(wiring=custom(_wire_detect, "(nc, reg_max, end2end, [input channels]); legacy class branch unless "
                                      "an earlier block declares depthwise_detect_cls", not_a_map()))
class Detect(nn.Module):
    """YOLO detection head. Input: feature maps ``[(B, ch[i], H_i, W_i)]``.

    Training: ``{"one2many": levels}`` (plus ``"one2one"`` for an end-to-end head), each level
    ``(B, 4*reg_max + nc, H_i, W_i)``. Eval (the detection contract of :mod:`zoo.nn.heads`):
    ``(detections, raw)``; ``raw["decoded"]`` is ``(B, 4 + nc, A)`` (boxes xywh in input pixels, then
    class probabilities) of the one-to-one branch of an end-to-end head, else of the one-to-many branch;
    ``detections (B, K, 6)`` are its NMS-free top-``max_det`` (end-to-end) or its per-class NMS
    (:func:`zoo.ops.detections.nms_detections`, IoU :attr:`nms_iou`, candidates above :attr:`nms_conf`).
    While being exported, an NMS head returns the candidates ``(B, A, 4 + nc)`` (boxes xywh, then
    probabilities) in place of the detections; the exported file's runtime applies the NMS.
    """

    task = "detect"
    box_prior = 2.0  # initial box-bin logits (Ultralytics 8.4's bias_init)

    def __init__(self, nc: int = 80, reg_max: int = 16, end2end: bool = False, ch: Sequence[int] = (),
                 legacy: bool = False) -> None:
        super().__init__()
        if not ch:
            raise ValueError(f"{type(self).__name__} needs the channels of its input levels")
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ValueError(f"{type(self).__name__} needs a positive class count nc, got {nc!r}")
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max
        self.end2end = end2end
        self.max_det = DEFAULT_MAX_DET
        self.nms_iou = DEFAULT_NMS_IOU
        self.nms_conf = DEFAULT_NMS_CONF
        self.max_candidates = DEFAULT_MAX_CANDIDATES
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        box_hidden = max(16, ch[0] // 4, reg_max * 4)
        cls_hidden = max(ch[0], min(nc, 100))
        cls_branch = legacy_cls_branch if legacy else light_cls_branch
        self.cv2: nn.ModuleList | None = nn.ModuleList(box_branch(c, box_hidden, reg_max) for c in ch)
        self.cv3: nn.ModuleList | None = nn.ModuleList(cls_branch(c, cls_hidden, nc) for c in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.one2one_cv2: nn.ModuleList | None = None
        self.one2one_cv3: nn.ModuleList | None = None
        if end2end:
            self.one2one_cv2 = nn.ModuleList(box_branch(c, box_hidden, reg_max) for c in ch)
            self.one2one_cv3 = nn.ModuleList(cls_branch(c, cls_hidden, nc) for c in ch)
        self._anchor_cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    @property
    def nms_free(self) -> bool:
        """Whether the detections come from the one-to-one branch (top-k, no NMS)."""
        return self.one2one_cv2 is not None and (self.end2end or self.cv2 is None)

    @property
    def loss(self) -> str:
        """The training recipe (``zoo.engine.tasks.heads.HEADS``): both branches for an end-to-end head."""
        return "yolov10" if self.one2one_cv2 is not None else "yolov8"

    def set_strides(self, strides: list[float]) -> None:
        self.stride.copy_(torch.tensor(strides, dtype=self.stride.dtype))
        self.bias_init(strides=strides)

    @torch.no_grad()
    def bias_init(self, image_size: int = 640, strides: Sequence[float] | None = None) -> None:
        """Prior biases: box bins :attr:`box_prior`; class logits for ~5 objects per image (YOLO convention).
        ``strides`` defaults to the buffer; passing them lets a build on the meta device (which sizes
        models without storage) set strides, since a meta buffer cannot be read back."""
        if strides is None:
            strides = self.stride.tolist()
        for boxes, classes in ((self.cv2, self.cv3), (self.one2one_cv2, self.one2one_cv3)):
            if boxes is None or classes is None:
                continue
            for box, cls, s in zip(boxes, classes, strides):
                box[-1].bias.fill_(self.box_prior)
                cls[-1].bias[: self.nc] = math.log(5 / self.nc / (image_size / max(s, 1.0)) ** 2)

    def drop_training_branches(self) -> None:
        """Deploy: an end-to-end head predicts with its one-to-one branch alone (the other one only
        trains); a one-to-many head keeps everything."""
        if self.one2one_cv2 is not None and self.end2end:
            self.cv2 = None
            self.cv3 = None

    @staticmethod
    def _levels(feats: Sequence[torch.Tensor], box: nn.ModuleList, cls: nn.ModuleList) -> list[torch.Tensor]:
        return [torch.cat((b(f), c(f)), 1) for f, b, c in zip(feats, box, cls)]

    def forward(self, x: list[torch.Tensor], *, max_det: int | None = None, conf: float | None = None):
        """``max_det`` (eval only): detections to return per image, default :attr:`max_det`; ``conf``
        (eval, NMS heads): candidates must score above it, default :attr:`nms_conf`."""
        raw: dict[str, list[torch.Tensor]] = {}
        if self.cv2 is not None and self.cv3 is not None:
            raw["one2many"] = self._levels(x, self.cv2, self.cv3)
        if self.one2one_cv2 is not None and self.one2one_cv3 is not None:
            raw["one2one"] = self._levels([f.detach() for f in x], self.one2one_cv2, self.one2one_cv3)
        if self.training:
            return raw
        nms_free = self.nms_free
        decoded = self.decode(raw["one2one"] if nms_free else raw["one2many"])
        limit = self.max_det if max_det is None else max_det
        # decoded is a transposed view of a contiguous (B, A, 4 + nc): the top-k reads that directly
        preds = decoded.transpose(1, 2)
        if nms_free:
            if exporting():
                # a traced graph's top-k sizes are constants of the example: max_det filler anchors scoring
                # -1 (below every real score, so they are never picked before one) keep them valid for
                # inputs with fewer anchors; an input with A * nc >= max_det gives the eager detections
                preds = F.pad(preds, (0, 0, 0, limit), value=-1.0)
            detections = topk_detections(preds, limit)
        elif exporting():
            # NMS keeps a data-dependent number of boxes, which a traced graph cannot: an exported graph
            # ends with the candidates (B, A, 4 + nc) and its runtime runs nms_detections (zoo.export)
            detections = preds
        else:
            threshold = self.nms_conf if conf is None else conf
            detections = nms_detections(preds, limit, self.nms_iou, threshold, self.max_candidates)
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
