"""What the trainer needs from a task, and :data:`TASKS`, the registry that maps a head's ``task`` to it.

The trainer is task-agnostic: it asks a :class:`Task` for datasets, a loss, a validation pass and
prediction images. A task class is chosen by ``model.task`` (the head's class attribute, see the head
contract in :mod:`zoo.nn.heads`):

- ``"detect"``  -> :class:`zoo.engine.tasks.detect.DetectTask`; the loss comes from the entry of
  :data:`zoo.engine.tasks.heads.HEADS` that the head names in its ``loss`` attribute.
- ``"classify"`` -> :class:`zoo.engine.tasks.classify.ClassifyTask`.
- ``"segment"`` (SAM) -> :class:`zoo.engine.tasks.sam.SamTask`.

Another task registers its class (whose ``name`` is the task) with ``@TASKS.register``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from zoo.data.normalise import InputNormaliser
from zoo.data.spec import DataSpec, resolve_data
from zoo.errors import ConfigError
from zoo.registry import Registry

__all__ = ["Task", "BaseTask", "TASKS", "task_class"]


class Task(Protocol):
    """The per-task pieces of training and validation."""

    name: str
    loss_names: tuple[str, ...]  # the item names the loss returns, in order
    fitness_key: str  # the validation metric that chooses best.pt (higher is better)
    default_imgsz: int

    def setup_data(self, imgsz: int) -> list[str]:
        """Resolve ``args.data`` for this task; returns the class names."""

    def build_dataset(self, split: str, imgsz: int, augment: bool) -> Dataset: ...

    def collate(self, batch: list[dict]) -> dict: ...

    def build_loss(self, model: nn.Module) -> nn.Module:
        """``loss(preds, batch) -> (scalar, {name: float})`` for the training forward output."""

    def preprocess(self, batch: dict, device: torch.device) -> dict: ...

    def train_inputs(self, batch: dict) -> dict[str, Any]:
        """Extra keyword inputs for ``model(img, **inputs)`` in training (e.g. targets for denoising)."""

    def parameter_prefixes(self, model: nn.Module, key: str) -> list[str]:
        """Parameter-name prefixes a ``--freeze`` / ``--lr-scale`` key stands for."""

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 loss_fn: nn.Module | None = None, progress: bool = False) -> dict[str, float]: ...

    def plot_predictions(self, model: nn.Module, batch: dict, path: Path) -> Path: ...


class BaseTask:
    """Shared plumbing: data resolution, image normalisation and batch transfer."""

    name = ""
    loss_names: tuple[str, ...] = ()
    fitness_key = ""
    default_imgsz = 320

    def __init__(self, args: argparse.Namespace, model: nn.Module, data: DataSpec | None = None) -> None:
        """``data``: the resolved dataset, when the caller resolved it first (else ``setup_data``)."""
        self.args = args
        self.spec: DataSpec | None = data
        self.names: list[str] = list(data.names) if data is not None else []
        # the model's input normalisation, the same one zoo predict and SamPredictor apply
        self.normalise = InputNormaliser.for_model(model)

    def setup_data(self, imgsz: int) -> list[str]:
        self.spec = resolve_data(getattr(self.args, "data", None), self.name, imgsz)
        self.names = list(self.spec.names)
        return self.names

    def preprocess(self, batch: dict, device: torch.device) -> dict:
        out = dict(batch)
        out["img"] = self.normalise(batch["img"].to(device, non_blocking=True))
        for key in ("cls", "boxes", "batch_idx"):
            if isinstance(batch.get(key), torch.Tensor):
                out[key] = batch[key].to(device, non_blocking=True)
        return out

    def train_inputs(self, batch: dict) -> dict[str, Any]:
        return {}

    def parameter_prefixes(self, model: nn.Module, key: str) -> list[str]:
        """Parameter-name prefixes meant by a ``--freeze`` / ``--lr-scale`` key: a row index (``"0"``),
        a row range (``"0-9"``), or a name prefix. Tasks add their own names (e.g. SAM's
        ``image_encoder``) by overriding this."""
        key = key.strip()
        if key.isdigit():
            return [f"model.{int(key)}."]
        if "-" in key and all(p.isdigit() for p in key.split("-", 1)):
            lo, hi = (int(p) for p in key.split("-", 1))
            return [f"model.{i}." for i in range(lo, hi + 1)]
        return [key]

    def image_rgb(self, batch: dict, i: int) -> np.ndarray:
        """Batch image ``i`` back as (H, W, 3) uint8 for drawing."""
        return batch["img"][i].permute(1, 2, 0).cpu().numpy()


# task name -> task class, keyed by the class's ``name``; the members are imported on first lookup
TASKS: Registry[type] = Registry("tasks", members=("zoo.engine.tasks.classify", "zoo.engine.tasks.detect",
                                                   "zoo.engine.tasks.sam"))


def task_class(task: str, where: str | None = None) -> type:
    """The task class for a head that declares ``task`` (``where``: the config, for the message)."""
    if task not in TASKS:
        raise ConfigError(f"no trainer for task '{task}' of this config's head "
                          f"(trainable tasks: {', '.join(TASKS.names())})", file=where)
    return TASKS.get(task)

