"""Non-trivial BatchNorm statistics for fuse tests (a plain module: conftest names collide across folders)."""
from __future__ import annotations

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
