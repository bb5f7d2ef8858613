"""RT-DETR as a detection head: its loss and the targets its denoising queries need.

RT-DETR: Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", arXiv:2304.08069. The
decoder is NMS-free and keeps the detection contract of :mod:`zoo.nn.heads` itself, so only the
training side is registered here, as the ``"rtdetr"`` entry of :data:`~zoo.engine.tasks.heads.HEADS`.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch.nn as nn

from zoo.engine.losses.rtdetr import RTDETRGains, RTDETRLoss, rtdetr_targets
from zoo.engine.tasks.heads import HEADS, DetectHead

__all__ = ["rtdetr_loss", "rtdetr_train_inputs"]


def rtdetr_loss(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    return RTDETRLoss(int(model.model[-1].nc), RTDETRGains())


def rtdetr_train_inputs(batch: dict) -> dict[str, Any]:
    """The decoder's ``batch`` keyword: targets as normalised cxcywh for its denoising queries."""
    cls, boxes, image = rtdetr_targets(batch)
    return {"batch": {"cls": cls, "bboxes": boxes, "batch_idx": image}}


HEADS.register(DetectHead("rtdetr", loss=rtdetr_loss, train_inputs=rtdetr_train_inputs))
