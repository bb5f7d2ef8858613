"""Trace a graph module into a TorchScript archive with the zoo's metadata as an extra file.

``torch.jit.trace`` records the same ops the ONNX exporter sees (the CPU fast paths are off while
tracing), and the sizes the layers take from the input stay traced, so the archive runs at other
batch sizes and image sizes too. Load with :func:`load_torchscript` (or ``torch.jit.load`` with
``_extra_files={"zoo_metadata.json": ""}``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from zoo.export.metadata import TORCHSCRIPT_FILE, ExportMetadata
from zoo.export.options import ExportError

__all__ = ["export_torchscript", "load_torchscript"]


def export_torchscript(graph: nn.Module, example: torch.Tensor, path: Path, metadata: ExportMetadata) -> Path:
    """Trace ``graph`` on ``example`` and save it to ``path`` with ``metadata`` (written whole)."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: sizes recorded as constants are expected
            traced = torch.jit.trace(graph, (example,), check_trace=False)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ExportError(f"TorchScript tracing failed: {type(exc).__name__}: {first}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still the format
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_FILE: metadata.to_json()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_torchscript(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule, ExportMetadata]:
    """A TorchScript export and its metadata."""
    extra = {TORCHSCRIPT_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    if not extra[TORCHSCRIPT_FILE]:
        raise ExportError(f"{path}: a TorchScript file without zoo metadata; export it with `zoo export MODEL "
                          "--format torchscript`")
    text = extra[TORCHSCRIPT_FILE]
    text = text.decode() if isinstance(text, bytes) else text
    return module.eval(), ExportMetadata.from_json(text, str(path))
