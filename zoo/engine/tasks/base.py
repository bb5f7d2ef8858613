"""What the trainer needs from a task, and the registry that maps a head's ``task`` to it.

The trainer is task-agnostic: it asks a :class:`Task` for datasets, a loss, a validation pass and
prediction images. A task class is chosen by ``model.task`` (the head's class attribute):

- ``"detect"``  -> :class:`zoo.engine.tasks.detect.DetectTask`; the loss and post-processing come
  from the head's entry in its :data:`~zoo.engine.tasks.detect.DETECT_HEADS` (``v10Detect`` here;
  an RT-DETR decoder adds its own entry with ``register_detect_head``).
- ``"classify"`` -> :class:`zoo.engine.tasks.classify.ClassifyTask`.
- anything else (e.g. SAM's ``"segment"``) is added with ``@register_task("segment")``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from zoo.data.spec import DataSpec, resolve_data
from zoo.errors import ConfigError

__all__ = ["Task", "BaseTask", "TASKS", "register_task", "task_for"]


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

    def __init__(self, args: argparse.Namespace, model: nn.Module) -> None:
        self.args = args
        self.spec: DataSpec | None = None
        self.names: list[str] = []
        cfg = getattr(model, "yaml", {}) or {}
        # Optional per-model input normalisation (``mean``/``std`` in 0..1 units in the cfg);
        # without it images are fed as 0..1.
        self.mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1) if "mean" in cfg else None
        self.std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1) if "std" in cfg else None

    def setup_data(self, imgsz: int) -> list[str]:
        self.spec = resolve_data(getattr(self.args, "data", None), self.name, imgsz)
        self.names = list(self.spec.names)
        return self.names

    def normalise(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float() / 255.0
        if self.mean is not None:
            x = x - self.mean.to(x.device)
        if self.std is not None:
            x = x / self.std.to(x.device)
        return x

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


TASKS: dict[str, type] = {}


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator: the task class used for heads whose ``task`` attribute is ``name``."""

    def deco(cls: type) -> type:
        if name in TASKS:
            raise KeyError(f"task '{name}' is already registered by {TASKS[name].__qualname__}")
        TASKS[name] = cls
        cls.name = name
        return cls

    return deco


def task_for(model: nn.Module) -> type:
    import zoo.engine.tasks  # noqa: F401  (registers the built-in tasks)

    task = getattr(model, "task", None)
    if task not in TASKS:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"no trainer for task '{task}' of head {type(model.model[-1]).__name__} "
                          f"(trainable tasks: {known})", file=getattr(model, "source", None))
    return TASKS[task]
