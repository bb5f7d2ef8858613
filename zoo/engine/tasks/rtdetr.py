"""RT-DETR as a detection head: its loss, the targets its denoising queries need, and detections.

RT-DETR: Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", arXiv:2304.08069. The
decoder is NMS-free: its eval output already holds the top (query, class) pairs as
``(B, K, 6)`` boxes in input pixels, so post-processing only trims to ``max_det``.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn as nn

from zoo.engine.losses.rtdetr import RTDETRGains, RTDETRLoss, rtdetr_targets
from zoo.engine.tasks.detect import DetectHead, register_detect_head

__all__ = ["rtdetr_loss", "rtdetr_postprocess", "rtdetr_train_inputs"]


def rtdetr_loss(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    return RTDETRLoss(int(model.model[-1].nc), RTDETRGains())


def rtdetr_postprocess(output: Any, max_det: int) -> torch.Tensor:
    """Eval output ``(detections (B, K, 6), raw)`` -> the ``max_det`` best detections per image."""
    dets = output[0] if isinstance(output, (tuple, list)) else output
    return dets[:, :max_det]


def rtdetr_train_inputs(batch: dict) -> dict[str, Any]:
    """The decoder's ``batch`` keyword: targets as normalised cxcywh for its denoising queries."""
    cls, boxes, image = rtdetr_targets(batch)
    return {"batch": {"cls": cls, "bboxes": boxes, "batch_idx": image}}


register_detect_head("RTDETRDecoder", DetectHead(
    loss=rtdetr_loss, postprocess=rtdetr_postprocess,
    raw=lambda out: out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None,
    train_inputs=rtdetr_train_inputs))
