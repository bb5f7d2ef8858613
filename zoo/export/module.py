"""An exported file behind the model interface zoo's predict, val and benchmark code reads.

:class:`ExportedModule` wraps an :class:`~zoo.export.runtime.ExportedModel` (ONNX Runtime or
TorchScript) as a ``torch.nn.Module`` that keeps the head contract of :mod:`zoo.nn.heads`, so the
code that runs a PyTorch model runs the file unchanged, with no second copy for exports:

- ``task``, ``names``, ``name``, ``stride``, ``imgsz``, ``yaml`` (just its ``imgsz``) as a Model has;
- ``normalises_inside = True``: the graph does the model's normalisation, so
  :meth:`zoo.data.normalise.InputNormaliser.for_model` gives it plain 0..1 pixels (the one place
  where the two differ);
- ``forward(images, max_det=None)``: detectors ``(detections (B, K, 6), {})`` (for a graph that ends
  with NMS candidates, the NMS runs here, as the head runs it in PyTorch); classifiers
  log-probabilities, which are logits whose softmax is the graph's probabilities again, so
  ``softmax`` / top-k code written for logits gives the same answer;
- a static graph gets its fixed batch: a larger batch runs in chunks, a short one is padded.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from zoo.errors import DataError
from zoo.export.options import ExportError, check_imgsz
from zoo.ops.detections import DEFAULT_NMS_CONF, nms_detections

if TYPE_CHECKING:  # runtime.py builds these modules; importing it here would be a cycle
    from zoo.export.runtime import ExportedModel

__all__ = ["EXPORTED_SUFFIXES", "ExportedModule", "is_exported_file", "checked_file"]

EXPORTED_SUFFIXES = (".onnx", ".torchscript")
TINY_PROBABILITY = 1e-30  # log(0) would be -inf; a class this unlikely still ranks last


def is_exported_file(path: str | Path) -> bool:
    """Whether ``path`` names an exported model (by suffix, as :func:`~zoo.export.load_exported` does)."""
    return Path(str(path)).suffix.lower() in EXPORTED_SUFFIXES


def checked_file(path: str | Path) -> Path:
    """``path`` if it is a file; a one-line error otherwise (before a runtime prints its own story)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"exported model '{file}' does not exist; write it with `zoo export MODEL`")
    return file


class ExportedModule(nn.Module):
    """``exported`` behind the Model interface of the module doc."""

    normalises_inside = True  # read by InputNormaliser.for_model
    inference_only = True  # read by the training tasks: nothing here can be trained

    def __init__(self, exported: "ExportedModel") -> None:
        super().__init__()
        self.exported = exported
        meta = exported.metadata
        self.task = exported.task
        self.names = dict(exported.names)
        self.name = meta.model or exported.path.stem
        self.source = str(exported.path)
        self.ch = 3
        self.graph_imgsz = tuple(exported.imgsz)
        height, width = self.graph_imgsz
        # the square side predict and val letterbox to; None when the graph was exported rectangular
        self.imgsz = height if height == width else None
        self.yaml: dict[str, Any] = {"imgsz": self.imgsz} if self.imgsz else {}
        self.stride = torch.tensor([float(exported.stride)])
        # predict / val find the device from the first parameter; an empty one carries it here
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def check_imgsz(self, requested: int | None, flag: str = "--imgsz") -> int:
        """The square input side to use: ``requested`` if the graph takes it, else its own size.

        A static graph takes only the size it was exported at (a different one is refused, not
        silently changed); a dynamic one takes any multiple of the stride."""
        where = self.exported.path.name
        if self.imgsz is None and (requested is None or not self.exported.dynamic):
            h, w = self.graph_imgsz
            raise ExportError(f"{where} was exported at {h}x{w}; predict and val letterbox to a square: "
                              "re-export with one --imgsz N (or --dynamic and give --imgsz N)")
        if requested is None or int(requested) == self.imgsz:
            return int(requested or self.imgsz)
        if not self.exported.dynamic:
            raise ExportError(f"{flag} {requested}: {where} is a static graph for {self.imgsz}x{self.imgsz}; leave "
                              f"{flag} out, or re-export with --imgsz {requested} (or --dynamic)")
        check_imgsz((int(requested), int(requested)), int(self.exported.stride))
        return int(requested)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        if self.exported.dynamic or images.shape[0] == self.exported.batch:
            return self.exported(images)
        fixed = self.exported.batch
        outputs = []
        for start in range(0, images.shape[0], fixed):
            chunk = images[start:start + fixed]
            short = fixed - chunk.shape[0]
            if short:  # the last chunk: pad with blank images, whose rows are dropped again
                chunk = torch.cat([chunk, chunk.new_zeros(short, *chunk.shape[1:])])
            outputs.append(self.exported(chunk)[:fixed - short])
        return torch.cat(outputs)

    forward_keywords = frozenset({"max_det", "conf"})  # read by zoo.nn.heads.detect, as a Model's

    def forward(self, images: torch.Tensor, max_det: int | None = None, conf: float | None = None) -> Any:
        out = self._run(images)
        if self.task == "detect":
            nms_iou = self.exported.metadata.nms_iou
            if nms_iou is not None:  # the graph ends with NMS candidates (a YOLOv8/11-style head)
                limit = int(max_det if max_det is not None else self.exported.metadata.max_det or 300)
                threshold = DEFAULT_NMS_CONF if conf is None else float(conf)
                return nms_detections(out.float(), limit, float(nms_iou), threshold), {}
            return (out if max_det is None else out[:, :int(max_det)]), {}
        if self.task == "classify":
            return out.float().clamp_min(TINY_PROBABILITY).log()
        return out

    def extra_repr(self) -> str:
        return repr(self.exported)
