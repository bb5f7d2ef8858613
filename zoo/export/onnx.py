"""Trace a graph module (:mod:`zoo.export.graphs`) into an ONNX file with the zoo's metadata.

Exporter: torch's TorchScript-based one (``torch.onnx.export(dynamo=False)``). The dynamo exporter
(torch.export, then a translation) also handles YOLOv10n since the anchors take the stride buffer as
a tensor (no Python number read from it), and its graph agrees as well, but it takes 14-32x as long
(``tools/bench_export.py --dynamo``). Both give graphs with symbolic batch, height and width; the
layers compute every size-dependent quantity (anchors, window padding, patch resizes) from the
traced input size while :func:`zoo.nn.common.exporting` is true, so a dynamic graph is right at any
size, not only the example's.

While tracing, the CPU fast paths (oneDNN fused calls, :mod:`zoo.nn.fast_cpu`) give way to plain
ops: the graph holds standard ONNX operators only.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from zoo.export.graphs import flat_tensors
from zoo.export.metadata import ExportMetadata
from zoo.export.options import DEFAULT_OPSET, ExportError, ExportOptions, require

__all__ = ["export_onnx", "onnx_bytes", "write_onnx", "output_names_for", "read_onnx_metadata", "graph_op_types",
           "unsupported_op", "OPSET_INTRODUCED", "opset_fix"]

# torch ops the exporter writes only from some opset on: op -> (the ONNX operator, its first opset)
OPSET_INTRODUCED = {"aten::grid_sampler": ("GridSample", 16)}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter while it runs: its tracer warnings (sizes it records as constants are
    expected here) and the IR dump it writes straight to file descriptor 1 when an op fails (the
    caller reports the failure in one line instead)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def onnx_bytes(module: nn.Module, inputs: tuple[torch.Tensor, ...], opset: int, input_names: Sequence[str] = (),
               output_names: Sequence[str] = (), dynamic_axes: dict[str, dict[int, str]] | None = None) -> bytes:
    """``module(*inputs)`` traced to a serialised ONNX model (eval mode, no autograd)."""
    buffer = io.BytesIO()
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=opset,
                          input_names=list(input_names) or None, output_names=list(output_names) or None,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    return buffer.getvalue()


def unsupported_op(exc: BaseException) -> str:
    """The operator an export failure names (``aten::fft_rfft2``), else the error's first line."""
    text = str(exc)
    found = re.search(r"operator '([^']+)'", text)
    return found.group(1) if found else f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def opset_fix(op: str, opset: int) -> str | None:
    """The fix for an ``op`` that only an opset above ``opset`` has (e.g. RT-DETR's GridSample), else None."""
    onnx_op, first = OPSET_INTRODUCED.get(op, ("", 0))
    if opset >= first:
        return None
    return f"{onnx_op} needs opset {first}+: use --opset {first} or higher (default {DEFAULT_OPSET})"


def write_onnx(data: bytes, path: Path, metadata: ExportMetadata, simplify: bool) -> Path:
    """Add ``metadata`` (and, with ``simplify``, onnxscript's optimizer passes) to a serialised model,
    check it and write it to ``path`` (whole: a reader never sees half a file)."""
    onnx = require("onnx", "ONNX export")
    proto = onnx.load_model_from_string(data)
    if simplify:
        optimizer = require("onnxscript", "--simplify (onnxscript's graph optimizer)").optimizer
        proto = optimizer.optimize(proto)
    del proto.metadata_props[:]
    for key, value in metadata.to_strings().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "zoo"
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(proto.SerializeToString())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_onnx(graph: nn.Module, example: torch.Tensor, path: Path, options: ExportOptions,
                metadata: ExportMetadata, explain_failure: Callable[[BaseException], Exception] | None = None) -> Path:
    """Trace ``graph`` on ``example`` and write ``path``. Output names come from ``metadata``;
    ``options.dynamic`` makes batch, height and width symbolic (outputs: their batch). On an
    exporter error ``explain_failure(exc)`` builds the one-line error raised (e.g. naming the row
    that holds the failing op); without it the error names the op."""
    outputs = metadata.output_names
    dynamic_axes = None
    if options.dynamic:
        dynamic_axes = {metadata.input_name: {0: "batch", 2: "height", 3: "width"}}
        dynamic_axes.update({name: {0: "batch"} for name in outputs})
    try:
        data = onnx_bytes(graph, (example,), options.onnx_opset, [metadata.input_name], outputs, dynamic_axes)
    except Exception as exc:
        if explain_failure is not None:
            raise explain_failure(exc) from None
        raise ExportError(f"ONNX export failed on {unsupported_op(exc)} (opset {options.onnx_opset})") from None
    return write_onnx(data, path, metadata, options.simplify)


def output_names_for(graph: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the graph's outputs: the graph's own (one per task), numbered when it returns several."""
    with torch.no_grad():
        count = len(flat_tensors(graph(example)))
    base = getattr(graph, "output_names", ["output"])
    return list(base) if count == len(base) else [f"output{i}" for i in range(count)]


def read_onnx_metadata(path: str | Path) -> ExportMetadata:
    """The zoo metadata of an exported ONNX file (the graph's weights are not read)."""
    onnx = require("onnx", "reading an ONNX file")
    proto = onnx.load_model(str(path), load_external_data=False)
    return ExportMetadata.from_strings({p.key: p.value for p in proto.metadata_props}, str(path))


def graph_op_types(path: str | Path) -> set[str]:
    """``domain::OpType`` of every node of an ONNX file (``""`` domain: the standard operators), for
    checks such as "no mkldnn or custom op in the graph"."""
    onnx = require("onnx", "reading an ONNX file")
    proto = onnx.load_model(str(path), load_external_data=False)
    return {f"{node.domain}::{node.op_type}" for node in proto.graph.node}
