"""Non-trivial BatchNorm statistics for fuse tests (a plain module: conftest names collide across folders)."""
from __future__ import annotations

import torch
import torch.nn as nn


def randomise_batchnorm(module: nn.Module) -> nn.Module:
    """Give every BatchNorm2d in ``module`` random running statistics and affine parameters (from torch's
    global generator), so that folding them into convs is actually exercised. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module


def fuse_in_place(module: nn.Module) -> nn.Module:
    """Call ``fuse()`` on ``module`` and every submodule that has one (what ``Model.fuse`` does for its
    rows), for bare blocks."""
    for m in [m for m in module.modules() if hasattr(m, "fuse")]:
        m.fuse()
    return module


def fuse_changes_output_by(model, x: torch.Tensor) -> float:
    """Randomise ``model``'s BatchNorms (seed 0), fuse it, and return the max abs change of its output on
    ``x`` (``model.run_rows``); the model is left fused, in eval mode."""
    torch.manual_seed(0)
    randomise_batchnorm(model).eval()
    with torch.no_grad():
        before = model.run_rows(x)
        after = model.fuse().run_rows(x)
    return float((after - before).abs().max())
