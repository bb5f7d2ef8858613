"""Shared by the export tests (a plain module: conftest names collide across folders)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.data.shapes import ShapesConfig, render_shapes

REASON = 'needs the export extra: pip install -e ".[export]"'


def require_runtime() -> None:
    """Skip the calling test unless onnx and onnxruntime are installed."""
    pytest.importorskip("onnx", reason=REASON)
    pytest.importorskip("onnxruntime", reason=REASON)


def shapes_batch(n: int, size: int) -> torch.Tensor:
    """``n`` rendered shapes images ``(n, 3, size, size)`` in 0..1: structure a detector reacts to."""
    images = [render_shapes(ShapesConfig(size=(size, size)), "val", i).image for i in range(n)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Set every BatchNorm's running statistics to those of ``images`` (one train-mode pass), then eval.

    A freshly initialised model's activations shrink layer by layer, so all its scores come out
    equal and "the same detections" would be decided by tie order. With statistics taken from real
    activations every layer varies with the image, and so do scores and boxes.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the pass
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def pytorch_eval(model: torch.nn.Module, images: torch.Tensor, **kwargs) -> torch.Tensor:
    """The deployed model's eval output (detections, or logits) on a copy: the reference."""
    deployed = copy.deepcopy(model).deploy().eval()
    with torch.no_grad():
        out = deployed(images, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def assert_same_detections(ref: np.ndarray, out: np.ndarray, size: int, atol: float = 1e-4, top: int = 50) -> int:
    """The detections ``(K, 6)`` of ``out`` above a score threshold are those of ``ref``: each row of
    ``ref`` scoring clearly above its ``top``-th best has a distinct row of ``out`` with the same class,
    score within ``atol`` and box within ``atol`` of the image ``size`` (box coordinates are pixels: two
    float32 kernels of the same conv differ there by ~1e-5 relative, as PyTorch's own conv paths do),
    and vice versa. Near-equal scores may come in either order. Returns the rows compared."""
    threshold = float(ref[top - 1, 4])
    scale = np.array([size] * 4 + [1.0, 1.0], dtype=np.float64)
    ref_rows, out_rows = ref.astype(np.float64) / scale, out.astype(np.float64) / scale
    sure = ref_rows[ref_rows[:, 4] > threshold + 2 * atol]
    candidates = out_rows[out_rows[:, 4] > threshold]
    used: set[int] = set()
    for row in sure:
        diff = np.abs(candidates - row).max(1)
        diff[list(used)] = np.inf
        best = int(diff.argmin()) if len(diff) else -1
        assert best >= 0 and diff[best] <= atol, f"no exported detection matches {row * scale}"
        used.add(best)
    # nothing extra: every clearly-above exported row was matched
    clear_out = np.flatnonzero(candidates[:, 4] > threshold + 3 * atol)
    assert set(clear_out.tolist()) <= used
    return len(sure)
