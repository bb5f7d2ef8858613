"""Pixel normalisation of model inputs, one rule for training, validation and prediction.

A model sees pixels divided by 255, then per channel minus ``mean`` and divided by ``std``
(0..1 units) when it has them. Where they come from, first match wins:

1. the cfg's ``mean`` (with its ``std``, if any);
2. the statistics the head declares as ``pixel_mean`` / ``pixel_std`` (0..255 units, as the papers
   give them; SAM's), so weights trained here and the original ones see the same inputs;
3. none: inputs stay 0..1.

A model that declares ``normalises_inside = True`` (an exported graph, :mod:`zoo.export.module`) does
its normalisation itself and gets plain 0..1 pixels.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["InputNormaliser"]


class InputNormaliser:
    """``(B, C, H, W)`` pixels in 0..255 (any dtype) -> normalised float32 model inputs.

    ``mean`` / ``std`` are ``(1, C, 1, 1)`` float32 tensors in 0..1 units, or ``None``.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        self.mean = mean
        self.std = std

    @classmethod
    def for_model(cls, model: Any) -> "InputNormaliser":
        """The normalisation ``model`` expects (the rule in the module docstring)."""
        if getattr(model, "normalises_inside", False):
            return cls()
        cfg = getattr(model, "yaml", {}) or {}
        if "mean" in cfg:
            mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1) if "std" in cfg else None
            return cls(mean, std)
        head = model.model[-1]
        pixel_mean, pixel_std = getattr(head, "pixel_mean", None), getattr(head, "pixel_std", None)
        return cls(None if pixel_mean is None else torch.tensor(pixel_mean).view(1, -1, 1, 1) / 255.0,
                   None if pixel_std is None else torch.tensor(pixel_std).view(1, -1, 1, 1) / 255.0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if self.mean is not None:
            x = x - self.mean.to(x.device)
        if self.std is not None:
            x = x / self.std.to(x.device)
        return x

    def image(self, rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """One ``(H, W, 3)`` uint8 RGB image -> ``(1, 3, H, W)`` normalised on ``device``."""
        return self(torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].to(device))
