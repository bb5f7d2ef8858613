"""``Results``: what :meth:`zoo.model.Model.predict` returns for one image.

A detector's result holds ``boxes`` ``(N, 4)`` x1, y1, x2, y2 in pixels of the original image,
``scores`` ``(N,)`` and ``cls`` ``(N,)`` class ids (best first); a classifier's holds ``probs``
``(nc,)``. ``names`` maps class ids to names for both. ``plot()`` draws the result on the image,
``save(path)`` writes that drawing as an image file, ``to_dict()`` / ``to_json()`` give plain data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo.drawing import draw_boxes, draw_label

__all__ = ["Results"]


@dataclass(eq=False)
class Results:
    """One image's predictions.

    Attributes:
        orig_img: the image as the model saw it before resizing, ``(H, W, 3)`` uint8 RGB.
        path: the file it came from, or ``None`` for an array / PIL image / tensor source.
        name: the file's name, or ``image{i}`` (its position in the source) for in-memory images.
        names: class id -> class name.
        task: ``"detect"`` or ``"classify"``.
        boxes, scores, cls: detections (``None`` for a classifier).
        probs: class probabilities (``None`` for a detector).
    """

    orig_img: np.ndarray
    path: str | None
    name: str
    names: dict[int, str]
    task: str
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    cls: np.ndarray | None = None
    probs: np.ndarray | None = None
    speed_ms: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def orig_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the original image."""
        return int(self.orig_img.shape[0]), int(self.orig_img.shape[1])

    @property
    def labels(self) -> list[str]:
        """The class name of each box (detections), or of the top class (classification)."""
        if self.cls is not None:
            return [self._name(c) for c in self.cls]
        return [self._name(self.top1)] if self.probs is not None else []

    @property
    def top1(self) -> int:
        """Id of the most probable class (classification only)."""
        return int(np.argmax(self._require_probs()))

    @property
    def top5(self) -> list[int]:
        """Ids of the (up to) five most probable classes, best first (classification only)."""
        probs = self._require_probs()
        return [int(i) for i in np.argsort(-probs, kind="stable")[:5]]

    @property
    def top1conf(self) -> float:
        return float(self._require_probs()[self.top1])

    def __len__(self) -> int:
        """Number of detections (0 for a classification result)."""
        return 0 if self.boxes is None else len(self.boxes)

    def __repr__(self) -> str:
        h, w = self.orig_shape
        what = (f"{len(self)} boxes" if self.task == "detect"
                else f"top1 {self._name(self.top1)} {self.top1conf:.3f}" if self.probs is not None else "empty")
        return f"Results({self.name!r}, {w}x{h}, {what})"

    def _name(self, c: Any) -> str:
        return self.names.get(int(c), str(int(c)))

    def _require_probs(self) -> np.ndarray:
        if self.probs is None:
            raise AttributeError(f"{self.name}: a {self.task} result has no class probabilities")
        return self.probs

    # ------------------------------------------------------------------ outputs
    def plot(self, labels: bool = True) -> np.ndarray:
        """The image with the predictions drawn on it, ``(H, W, 3)`` uint8 RGB (a classifier's top
        class goes on a strip above the image, so that image is taller)."""
        if self.probs is not None:
            return draw_label(self.orig_img, f"{self._name(self.top1)} {self.top1conf:.2f}")
        if self.boxes is None or self.cls is None:
            return self.orig_img.copy()
        names = [self._name(i) for i in range(max([*self.names, *(int(c) for c in self.cls), -1]) + 1)]
        return draw_boxes(self.orig_img, self.boxes, self.cls, names if labels else [""] * len(names),
                          self.scores if labels else None)

    def save(self, path: str | Path | None = None) -> Path:
        """Write :meth:`plot` to ``path`` (format from its suffix; default ``{stem}_pred.png`` in
        the current folder); returns the path written."""
        out = Path(path) if path is not None else Path(f"{Path(self.name).stem}_pred.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.plot()).save(out)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data: ``name``, ``path``, ``shape`` [h, w], ``task``, then ``detections``
        (a list of ``{box: [x1, y1, x2, y2], score, class, name}``) or ``top5`` (``{class, name, prob}``)."""
        out: dict[str, Any] = {"name": self.name, "path": self.path, "shape": list(self.orig_shape), "task": self.task}
        if self.boxes is not None and self.scores is not None and self.cls is not None:
            out["detections"] = [
                {"box": [round(float(v), 2) for v in box], "score": round(float(s), 5), "class": int(c),
                 "name": self._name(c)}
                for box, s, c in zip(self.boxes, self.scores, self.cls)]
        if self.probs is not None:
            out["top5"] = [{"class": i, "name": self._name(i), "prob": round(float(self.probs[i]), 5)}
                           for i in self.top5]
        return out

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)
