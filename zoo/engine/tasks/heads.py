"""How the detection task trains each kind of detection head: :data:`HEADS`.

A detection head names its entry with its ``loss`` class attribute (``v10Detect.loss = "yolov10"``,
``RTDETRDecoder.loss = "rtdetr"``); everything else the task needs comes from the head contract
(:mod:`zoo.nn.heads`): detections and the raw dict the loss scores are in every head's eval output.
A plugin head registers its own entry::

    HEADS.register(DetectHead("my_loss", loss=lambda model, args: MyLoss(model.model[-1])))
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from zoo.registry import Registry

__all__ = ["DetectHead", "HEADS"]


@dataclass(frozen=True)
class DetectHead:
    """One training recipe for detection heads.

    ``loss(model, args)`` builds the training loss, ``loss(preds, batch) -> (scalar, {name: float})``,
    which also scores the eval output's raw dict for a validation loss; ``train_inputs(batch)`` gives
    extra keyword inputs of the training forward (e.g. targets for denoising queries).
    """

    name: str
    loss: Callable[[nn.Module, argparse.Namespace], nn.Module]
    train_inputs: Callable[[dict], dict[str, Any]] | None = None


# members: the modules whose import registers zoo's own recipes (imported on first lookup)
HEADS: Registry[DetectHead] = Registry("detection head recipes",
                                       members=("zoo.engine.tasks.detect", "zoo.engine.tasks.rtdetr"))
