"""What an export is asked for, checked before any work: format, image size, batch, precision, opset.

Every refusal is one line naming the option and the fix (the CLI prints it and exits with code 2).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from zoo.errors import ConfigError, ZooError

__all__ = ["EXPORT_FORMATS", "DEFAULT_OPSET", "MIN_OPSET", "ExportError", "MissingDependency", "ExportOptions",
           "check_imgsz", "require"]

# format -> file suffix (Ultralytics' names, so tools that look at suffixes recognise them)
EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}
# the TorchScript-based ONNX exporter writes opsets 7..20; 17 is what ONNX Runtime >= 1.14 and
# TensorRT >= 8.6 all run, and has LayerNormalization as one op
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 20  # 14: scaled_dot_product_attention's export needs it
INSTALL_HINT = 'pip install -e ".[export]" in a clone, or pip install "zoo[export]"'


class ExportError(ZooError):
    """An export that cannot be made as asked (an option, the model, a runtime)."""


class MissingDependency(ExportError):
    """An optional package the export or the runtime needs is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import optional ``module`` (``onnx``, ``onnxruntime``, ``onnxscript``) or refuse in one line with
    the install command. Imported by name here, not at the top of the package, because the core
    install does not have them."""
    if importlib.util.find_spec(module) is None:
        raise MissingDependency(f"{purpose} needs the '{module}' package, which is not installed: {INSTALL_HINT}")
    return importlib.import_module(module)


def check_imgsz(imgsz: tuple[int, int], stride: int) -> None:
    """Refuse a size that is not a multiple of the model's largest stride, naming the nearest valid ones."""
    for side in imgsz:
        if side < 1 or side % stride:
            lower = side // stride * stride
            nearest = [size for size in (lower, lower + stride) if size >= stride]
            raise ConfigError(f"--imgsz {side} is not a multiple of the model's stride {stride}; "
                              f"use {' or '.join(map(str, nearest))}")


@dataclass(frozen=True)
class ExportOptions:
    """One export's options, as checked by :meth:`checked`.

    ``imgsz``: ``(H, W)`` of the example input (and the input size of a static graph). ``dynamic``:
    batch, height and width are graph inputs' symbolic sizes. ``batch``: the example (static) batch.
    ``half``: float16 weights, input and output. ``opset``: ONNX opset (``None``: :data:`DEFAULT_OPSET`).
    ``simplify``: run onnxscript's optimizer (constant folding, dead-code removal) on the ONNX graph.
    """

    format: str
    imgsz: tuple[int, int]
    dynamic: bool = False
    batch: int = 1
    half: bool = False
    opset: int | None = None
    simplify: bool = False

    @property
    def suffix(self) -> str:
        return EXPORT_FORMATS[self.format]

    @property
    def onnx_opset(self) -> int:
        return DEFAULT_OPSET if self.opset is None else self.opset

    def checked(self, stride: int) -> "ExportOptions":
        """Self, once every option is valid for a model whose largest stride is ``stride``."""
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(f"--format {self.format!r} is not an export format; use one of {', '.join(EXPORT_FORMATS)}")
        if self.batch < 1:
            raise ConfigError(f"--batch {self.batch} must be >= 1")
        check_imgsz(self.imgsz, stride)
        if self.format == "onnx":
            if self.opset is not None and not MIN_OPSET <= self.opset <= MAX_OPSET:
                raise ConfigError(f"--opset {self.opset} is outside what the exporter writes; use {MIN_OPSET}..{MAX_OPSET} "
                                  f"(default {DEFAULT_OPSET})")
            require("onnx", "ONNX export")
            if self.simplify:
                require("onnxscript", "--simplify (onnxscript's graph optimizer)")
        elif self.simplify or self.opset is not None:
            flag = "--simplify" if self.simplify else "--opset"
            raise ConfigError(f"{flag} applies to ONNX only; drop it or use --format onnx")
        return self
