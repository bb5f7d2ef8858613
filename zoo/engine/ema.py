"""Exponential moving average of model weights (Polyak averaging), with the warm-up ramp used by
the YOLO recipes: ``decay_t = decay * (1 - exp(-t / tau))`` so early, poorly trained weights are
forgotten quickly. Floating-point buffers (BatchNorm statistics) are averaged like the weights, as
in those recipes; integer buffers (``num_batches_tracked``) are copied."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps ``self.ema``, a frozen copy of the model in eval mode, updated after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])

    def state_dict(self) -> dict:
        return {"state": self.ema.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["state"])
        self.updates = int(state["updates"])
        self.decay, self.tau = float(state["decay"]), float(state["tau"])


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
