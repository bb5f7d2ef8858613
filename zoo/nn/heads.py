"""The head contract: what the last row of a model declares and returns, whatever its family.

The training engine and ``zoo predict`` read a model only through this contract, never through a
head's class name, so a new head (or a plugin's) plugs in by declaring the same attributes.

Every head declares, as class attributes:

- ``task``: ``"detect"``, ``"classify"`` or ``"segment"``; ``Model.task`` reads it and the engine
  picks its training task by it (``zoo.engine.tasks.base.TASKS``).
- optionally ``pixel_mean`` / ``pixel_std``: per-channel input statistics in 0..255 pixel units that
  its pretrained weights expect (SAM's); the cfg's ``mean`` / ``std`` override them
  (see :mod:`zoo.data.normalise`).

Eval-mode output, per task:

- ``"detect"``: ``(detections, raw)``. ``detections`` is ``(B, K, 6)``, each row
  ``[x1, y1, x2, y2, score, class]`` in pixels of the model input, sorted by score (best first),
  ``K <= max_det``: the forward's ``max_det`` keyword, else the head's ``max_det`` attribute (300 by
  default). ``raw`` is a dict of whatever the head's training loss can score (a validation loss) plus
  head-specific extras. A detection head also declares ``loss``: the name of the entry in
  ``zoo.engine.tasks.heads.HEADS`` that builds its training loss. Callers use :func:`detect`.
- ``"classify"``: class logits ``(B, nc)``.
- ``"segment"`` (SAM): ``(mask_logits, iou_predictions)``, shapes in :mod:`zoo.nn.sam`.

Training-mode output is whatever the head's loss takes (a dict for the detectors).
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["DEFAULT_MAX_DET", "best_detections", "detect"]

DEFAULT_MAX_DET = 300  # detections a head returns per image unless its max_det is changed


def best_detections(output: tuple[torch.Tensor, dict[str, Any]], max_det: int) -> torch.Tensor:
    """A detection head's eval ``output`` -> its ``max_det`` best detections per image ``(B, <=max_det, 6)``
    (the rows are sorted, so this is a slice)."""
    detections, _ = output
    return detections[:, :max_det]


def detect(model: torch.nn.Module, images: torch.Tensor, max_det: int, conf: float | None = None
           ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Eval forward of a detection model on normalised ``images`` -> ``(detections (B, <=max_det, 6), raw)``.

    ``max_det`` goes to the head, whose own top-k then picks that many (for YOLOv10 that is not the
    same as cutting its 300 best: its first step keeps the ``max_det`` best anchors). ``conf``, the
    score a caller keeps detections above, goes to heads that accept it (``conf`` among the model's
    ``forward_keywords``): an NMS head then considers no candidate below it, which is what makes
    predict at conf 0.25 cheap; the caller still filters, since other heads return every score.
    """
    kwargs: dict[str, Any] = {"max_det": int(max_det)}
    if conf is not None and "conf" in getattr(model, "forward_keywords", ()):
        kwargs["conf"] = float(conf)
    return model(images, **kwargs)
