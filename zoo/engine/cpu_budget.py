"""On CPU the default run is sized by compute: a model heavier than the one the CPU defaults were measured
with (see ``CPU_DEFAULTS`` in :mod:`zoo.engine.train_options`) trains on fewer shapes images, then fewer
epochs, so that ``zoo train rtdetr-l`` on a laptop still ends in minutes. The cost is counted (torch's FLOP
counter, one image), not timed, so every machine makes the same choice."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from zoo.engine.train_options import FilledDefaults, shapes_data, within_budget

__all__ = ["forward_gflops", "fit_cpu_budget"]


def forward_gflops(model: nn.Module, imgsz: int) -> float | None:
    """Forward GFLOPs of one ``imgsz`` x ``imgsz`` image in eval mode; None if the counter cannot follow it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, imgsz, imgsz, device=next(model.parameters()).device))
        return counter.get_total_flops() / 1e9
    except Exception:  # an uncountable model keeps the table's sizes; the ETA line still shows the cost
        return None
    finally:
        model.train(was_training)


def fit_cpu_budget(args: argparse.Namespace, filled: FilledDefaults | None, model: nn.Module, task: Any,
                   imgsz: int) -> str:
    """Shrink the CPU default run of a heavy model to the budget (re-resolving the task's data; the CPU lr
    is not used for it); returns the one-line note on the CPU defaults used ("" when none were)."""
    if filled is None:
        return ""
    gflops = forward_gflops(model, imgsz) if filled.budget is not None else None
    if gflops is None:
        return filled.note(imgsz)
    d = filled.defaults
    epochs_free = "epochs" in filled.used
    n_train, n_val, epochs = within_budget(d, gflops, int(args.batch), epochs_free)
    if (n_train, n_val, epochs) == (d.n_train, d.n_val, d.epochs):
        return filled.note(imgsz)
    args.data = shapes_data(n_train, n_val)
    if epochs_free:
        args.epochs = epochs
    if "lr" in filled.used:  # the CPU lr was chosen with models inside the budget; heavier ones (RT-DETR, whose
        args.lr = None  # paper trains at 1e-4, large YOLOs) keep the optimizer's usual default
        filled = dataclasses.replace(filled, used=tuple(k for k in filled.used if k != "lr"))
    task.setup_data(imgsz)
    return filled.note(imgsz, (n_train, n_val, int(args.epochs)),
                       f" (sized for this model's {gflops:.2g} GFLOPs per image)")
