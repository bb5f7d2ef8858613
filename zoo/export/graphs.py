"""The module that gets traced: the deployed model between the graph's input and its task output.

``images (B, 3, H, W)`` float RGB in 0..1 -> the model's normalisation (inside the graph, so a runtime
only divides uint8 pixels by 255) -> the deployed model (BN folded, re-parameterised, training
branches dropped) -> per task (:mod:`zoo.nn.heads`'s contract):

- ``detect``: ``detections (B, K, 6)`` ``[x1, y1, x2, y2, score, class]``, best first: the head's own
  NMS-free top-k (YOLOv10's one-to-one branch, RT-DETR's queries), so no NMS follows the graph; a head
  that needs NMS (``nms_free`` False: YOLOv8/11's ``Detect``) ends the graph with its ``candidates
  (B, A, 4 + nc)`` instead, and the runtime (:class:`zoo.export.module.ExportedModule`) runs the NMS;
- ``classify``: ``probabilities (B, nc)``, the softmax ``zoo predict`` applies;
- ``features`` (a backbone without a head): the output tensor(s) as the model returns them.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from zoo.data.normalise import InputNormaliser
from zoo.export.options import ExportError

__all__ = ["GRAPH_TASKS", "ExportGraph", "deployed_copy", "flat_tensors"]

GRAPH_TASKS = ("detect", "classify", "features")


def deployed_copy(model: Any, half: bool = False) -> Any:
    """A CPU, eval-mode, deployed copy of ``model`` (the caller's model is left as it was): what
    runs in production, so what is exported. ``half``: float16 weights (folded in float32 first)."""
    deployed = copy.deepcopy(model).cpu().float().eval()
    if hasattr(deployed, "to_channels_last"):
        deployed.to_channels_last(False)  # the graph's layout is the runtime's business
    if hasattr(deployed, "deploy"):
        deployed.deploy()
    deployed.requires_grad_(False)
    return deployed.half() if half else deployed


def flat_tensors(value: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of a (nested) tuple / list output, in order; a graph's outputs are a flat tuple."""
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(t for item in value for t in flat_tensors(item))
    if isinstance(value, dict):
        return tuple(t for item in value.values() for t in flat_tensors(item))
    return ()


class ExportGraph(nn.Module):
    """``images`` in 0..1 -> the task output of the module doc. ``model``: a deployed copy (see
    :func:`deployed_copy`); ``task``: its head's task; ``max_det``: detections per image; ``nms``: the
    head outputs NMS candidates while exported (see the module doc)."""

    def __init__(self, model: nn.Module, task: str, max_det: int | None = None, nms: bool = False) -> None:
        super().__init__()
        if task not in GRAPH_TASKS:
            hint = " (SAM exports as two graphs: zoo.export.sam)" if task == "segment" else ""
            raise ExportError(f"a '{task}' model has no single-graph export; exportable tasks: "
                              f"{', '.join(GRAPH_TASKS)}{hint}")
        self.model = model
        self.task = task
        self.max_det = max_det
        self.nms = nms  # detect: the output is NMS candidates
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        normaliser = InputNormaliser.for_model(model)
        # buffers (None when absent) so .half() / .to() move them with the weights
        self.register_buffer("mean", None if normaliser.mean is None else normaliser.mean.to(dtype))
        self.register_buffer("std", None if normaliser.std is None else normaliser.std.to(dtype))

    @property
    def output_names(self) -> list[str]:
        if self.task == "detect" and self.nms:
            return ["candidates"]
        return {"detect": ["detections"], "classify": ["probabilities"]}.get(self.task, ["output"])

    def forward(self, images: torch.Tensor) -> Any:
        x = images
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        if self.task == "detect":
            detections, _ = self.model(x, max_det=self.max_det)
            return detections
        if self.task == "classify":
            return self.model(x).softmax(-1)
        outputs = flat_tensors(self.model(x))
        return outputs[0] if len(outputs) == 1 else outputs
