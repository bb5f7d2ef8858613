"""Run an exported file: :class:`OnnxModel` (ONNX Runtime) and :class:`TorchScriptModel`, one interface.

Both read the file's :class:`~zoo.export.metadata.ExportMetadata` and expose it as attributes:

- ``task`` (``"detect"`` / ``"classify"`` / ``"features"``), ``names`` ``{index: name}``,
  ``imgsz`` ``(H, W)`` exported at, ``stride``, ``batch``, ``dynamic`` (batch, height and width
  free), ``half``, ``metadata`` (everything, including the preprocessing facts);
- ``model(images)`` / ``model.run(images)``: ``images (B, 3, H, W)`` float RGB in 0..1 (uint8 pixels
  / 255; the model's own normalisation happens inside) -> what the PyTorch export graph returns:
  detections ``(B, K, 6)`` ``[x1, y1, x2, y2, score, class]`` in input pixels, best first, or
  probabilities ``(B, nc)``. A numpy array in gives numpy out, a torch tensor gives a tensor on the
  same device. ``check_input`` says in one line why a batch does not fit a static graph.

:func:`load_exported` picks the class by the file's suffix. ``model.predict(source, ...)`` runs the same
image pipeline as :meth:`zoo.model.Model.predict` (:func:`zoo.inference.predict` on
:meth:`~ExportedModel.as_module`) and returns the same :class:`~zoo.results.Results`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.export.metadata import ExportMetadata
from zoo.export.module import ExportedModule, checked_file
from zoo.export.options import ExportError, require
from zoo.export.torchscript import load_torchscript
from zoo.inference import predict
from zoo.results import Results

__all__ = ["ExportedModel", "OnnxModel", "TorchScriptModel", "load_exported", "AUTO_DEVICES"]

AUTO_DEVICES = ("", "auto")  # the GPU when the runtime has one, else the CPU


class ExportedModel:
    """What both runtimes share: the metadata as attributes and the input checks."""

    def __init__(self, path: str | Path, metadata: ExportMetadata) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.task = metadata.task
        self.names = dict(metadata.names)
        self.imgsz = tuple(metadata.imgsz)
        self.stride = metadata.stride
        self.batch = metadata.batch
        self.dynamic = metadata.dynamic
        self.half = metadata.half

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Refuse in one line a batch shape this graph cannot take."""
        if len(shape) != 4 or shape[1] != 3:
            raise ExportError(f"{self.path.name}: expected images (B, 3, H, W), got {tuple(shape)}")
        if self.dynamic:
            if shape[2] % self.stride or shape[3] % self.stride:
                raise ExportError(f"{self.path.name}: image size {shape[2]}x{shape[3]} is not a multiple of the "
                                  f"stride {self.stride}")
        elif shape[0] != self.batch or tuple(shape[2:]) != self.imgsz:
            raise ExportError(f"{self.path.name}: a static graph for batch {self.batch} at {self.imgsz[0]}x"
                              f"{self.imgsz[1]} got {shape[0]} at {shape[2]}x{shape[3]}; export with --dynamic "
                              "for other sizes")

    def run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def as_module(self) -> ExportedModule:
        """This file behind the PyTorch Model interface zoo's predict / val / benchmark code reads."""
        return ExportedModule(self)

    def predict(self, source: Any, conf: float = 0.25, imgsz: int | None = None, max_det: int = 300,
                batch: int = 1) -> list[Results]:
        """:meth:`zoo.model.Model.predict` on this file: the same sources, preprocessing and Results
        (``imgsz``: a dynamic graph's input side; a static graph takes only its own)."""
        return predict(self.as_module(), source, conf=conf, imgsz=imgsz, max_det=max_det, batch=batch)

    def __call__(self, images: np.ndarray | torch.Tensor) -> Any:
        if isinstance(images, torch.Tensor):
            out = self.run(images.detach().cpu().numpy())
            return torch.from_numpy(out).to(images.device)
        return self.run(np.asarray(images))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, task={self.task!r}, imgsz={self.imgsz}, "
                f"dynamic={self.dynamic})")


class OnnxModel(ExportedModel):
    """An ONNX export on ONNX Runtime: the CUDA provider first when ``device`` is ``cuda`` (refused in
    one line when the installed runtime lacks it) or ``auto`` and the runtime has it, else the CPU
    provider. ``providers`` lists the ones in use."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        ort = require("onnxruntime", "running an ONNX model")
        wanted = ["CPUExecutionProvider"]
        if str(device) in AUTO_DEVICES:
            if "CUDAExecutionProvider" in ort.get_available_providers():
                wanted.insert(0, "CUDAExecutionProvider")
        elif str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ExportError(f"device {device!r}: this onnxruntime has no CUDA provider; install "
                                  "onnxruntime-gpu or use --device cpu")
            wanted.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if threads is not None:  # None: the runtime's choice (one per core)
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(checked_file(path)), options, providers=wanted)
        # the metadata as the runtime reads it: running a file needs onnxruntime only, not onnx
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        super().__init__(path, ExportMetadata.from_strings(props, str(path)))
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W)`` 0..1 floats -> the first output (the task output)."""
        self.check_input(images.shape)
        dtype = np.float16 if self.half else np.float32
        return self.session.run(self.output_names[:1], {self.input_name: images.astype(dtype, copy=False)})[0]


class TorchScriptModel(ExportedModel):
    """A TorchScript export, on ``device``."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        if str(device) in AUTO_DEVICES:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        module, metadata = load_torchscript(checked_file(path), device)
        super().__init__(path, metadata)
        self.module = module
        self.device = torch.device(device)

    def run(self, images: np.ndarray) -> np.ndarray:
        self.check_input(images.shape)
        dtype = torch.float16 if self.half else torch.float32
        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(images)).to(self.device, dtype))
        first = out[0] if isinstance(out, (tuple, list)) else out
        return first.cpu().numpy()


def load_exported(path: str | Path, device: str = "cpu", threads: int | None = None) -> ExportedModel:
    """:class:`OnnxModel` for ``.onnx``, else :class:`TorchScriptModel`; ``device``: ``cpu``, ``cuda[:N]``
    or ``auto``; ``threads``: ONNX Runtime's intra-op threads (TorchScript follows torch's setting)."""
    if Path(path).suffix.lower() == ".onnx":
        return OnnxModel(path, device, threads)
    return TorchScriptModel(path, device)
