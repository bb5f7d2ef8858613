"""Optimizer construction and the learning-rate schedule (linear warm-up, then cosine or linear decay).

Parameter groups follow common practice: weight decay on conv / linear weights only, none on
biases and normalisation parameters. The schedule is a pure function of the global iteration, so
resuming needs only the step count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["build_optimizer", "LRSchedule", "parameter_groups"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def parameter_groups(model: nn.Module, weight_decay: float, lr_scale: dict[str, float] | None = None
                     ) -> list[dict]:
    """Trainable parameters split into decay / no-decay groups, and further by ``lr_scale`` prefixes
    (``{"model.0.": 0.1}`` trains row 0 at a tenth of the base rate). Each group carries ``lr_scale``
    and ``kind`` ("weight" or "bias_norm": the warm-up starts biases higher)."""
    lr_scale = lr_scale or {}
    no_decay: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("bias") or isinstance(module, _NORMS) or p.ndim <= 1:
                no_decay.add(id(p))
    groups: dict[tuple[str, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = next((s for prefix, s in lr_scale.items() if name.startswith(prefix)), 1.0)
        kind = "bias_norm" if id(p) in no_decay else "weight"
        key = (kind, scale)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if kind == "bias_norm" else weight_decay,
                           "lr_scale": scale, "kind": kind}
        groups[key]["params"].append(p)
    return list(groups.values())


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float,
                    lr_scale: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """``name``: "AdamW", "Adam" or "SGD" (Nesterov). ``momentum`` is SGD's momentum or Adam's beta1."""
    groups = parameter_groups(model, weight_decay, lr_scale)
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    if key == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ValueError(f"unknown optimizer '{name}': use AdamW, Adam or SGD")


@dataclass
class LRSchedule:
    """lr(step) for ``total`` steps: warm-up over ``warmup`` steps (weights from 0, biases down from
    ``warmup_bias_lr``, momentum from ``warmup_momentum``), then ``kind`` ("cosine" or "linear")
    decay from ``lr`` to ``lr * lrf``."""

    lr: float
    total: int
    warmup: int = 0
    lrf: float = 0.01
    kind: str = "cosine"
    warmup_bias_lr: float = 0.1
    momentum: float = 0.9
    warmup_momentum: float = 0.8

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "linear"):
            raise ValueError(f"unknown schedule '{self.kind}': use cosine or linear")
        self.total = max(int(self.total), 1)
        self.warmup = max(0, min(int(self.warmup), self.total - 1))

    def factor(self, step: int) -> float:
        """Decay multiplier in [lrf, 1] at ``step`` (the warm-up ramps towards it)."""
        x = min(max(step, 0) / self.total, 1.0)
        if self.kind == "cosine":
            return self.lrf + (1 - self.lrf) * 0.5 * (1 + math.cos(math.pi * x))
        return 1 - (1 - self.lrf) * x

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr (and momentum during warm-up) for ``step``; returns the base lr."""
        target = self.lr * self.factor(step)
        warm = step < self.warmup
        t = step / self.warmup if warm else 1.0
        mom = self.warmup_momentum + (self.momentum - self.warmup_momentum) * t if warm else self.momentum
        for g in optimizer.param_groups:
            scale = g.get("lr_scale", 1.0)
            if warm:
                start = self.warmup_bias_lr if g.get("kind") == "bias_norm" else 0.0
                g["lr"] = (start + (target - start) * t) * scale
            else:
                g["lr"] = target * scale
            if "betas" in g:
                g["betas"] = (mom, g["betas"][1])
            elif "momentum" in g:
                g["momentum"] = mom
        return target if not warm else target * t
