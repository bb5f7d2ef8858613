"""Every shipped cfg builds and runs a small forward."""
from __future__ import annotations

import pytest
import torch

from zoo import Model

from zoo_test_paths import CFG

CFGS = sorted(CFG.glob("*.yaml"))


@pytest.mark.parametrize("path", CFGS, ids=[p.stem for p in CFGS])
def test_cfg_builds_and_runs(path):
    model = Model(path).eval()
    size = int(model.yaml.get("imgsz", 128)) if model.task != "classify" else 128
    with torch.no_grad():
        out = model(torch.rand(1, model.ch, size, size))
    leaves = out if isinstance(out, (tuple, list)) else [out]
    assert any(isinstance(t, torch.Tensor) and torch.isfinite(t).all() for t in leaves)
