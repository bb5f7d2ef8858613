"""``export_model``: a zoo model to an ONNX or TorchScript file a runtime can use on its own.

Steps: check the options (format, image size against the stride, optional packages) -> a deployed
copy of the model (BN folded, training branches dropped, CPU, eval) -> the task graph of
:mod:`zoo.export.graphs` (normalisation inside, task output) -> trace on a random example of the
asked size and batch -> write the file with :class:`~zoo.export.metadata.ExportMetadata`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from zoo.errors import ConfigError
from zoo.export.graphs import ExportGraph, deployed_copy
from zoo.export.metadata import NMS_CANDIDATES, OUTPUTS_BY_TASK, RESIZE_BY_TASK, ExportMetadata
from zoo.export.onnx import export_onnx, onnx_bytes, opset_fix, output_names_for, unsupported_op
from zoo.export.options import ExportOptions
from zoo.export.sam import export_sam
from zoo.export.rows import failing_row_error
from zoo.export.torchscript import export_torchscript
from zoo.inference import predict_imgsz
from zoo.version import __version__

__all__ = ["export_model", "export_segment", "default_export_path", "model_stride", "as_imgsz"]


def model_stride(model: Any) -> int:
    """The model's largest stride: exported sizes are multiples of it."""
    stride = getattr(model, "stride", None)
    return max(1, int(round(float(torch.as_tensor(stride).max())))) if stride is not None else 1


def as_imgsz(model: Any, imgsz: int | Sequence[int] | None) -> tuple[int, int]:
    """``(H, W)``: ``imgsz`` as N or (H, W), else the size ``zoo predict`` uses for this model."""
    if imgsz is None:
        size = predict_imgsz(model, None) if getattr(model, "task", None) in RESIZE_BY_TASK else 640
        return size, size
    if isinstance(imgsz, int):
        return imgsz, imgsz
    sizes = [int(v) for v in imgsz]
    if len(sizes) not in (1, 2):
        raise ConfigError(f"--imgsz takes N or H W, got {' '.join(map(str, sizes)) or 'nothing'}")
    return (sizes[0], sizes[-1])


def default_export_path(model: Any, suffix: str, checkpoint: str | Path | None = None) -> Path:
    """Beside the checkpoint the model came from (``best.pt`` -> ``best.onnx``), else ``<name><suffix>``
    in the current folder."""
    checkpoint = checkpoint or getattr(model, "checkpoint_path", None)
    if checkpoint:
        return Path(checkpoint).with_suffix(suffix)
    return Path(f"{getattr(model, 'name', None) or 'model'}{suffix}")


def _metadata(model: Any, graph: ExportGraph, options: ExportOptions, stride: int, outputs: list[str]) -> ExportMetadata:
    task = graph.task
    return ExportMetadata(
        task=task, names=dict(getattr(model, "names", {}) or {}), imgsz=options.imgsz, stride=stride,
        model=str(getattr(model, "name", "") or ""), zoo_version=__version__, format=options.format,
        batch=options.batch, dynamic=options.dynamic, half=options.half,
        opset=options.onnx_opset if options.format == "onnx" else None, max_det=graph.max_det,
        output_names=outputs, mean=None if graph.mean is None else graph.mean.flatten().float().tolist(),
        std=None if graph.std is None else graph.std.flatten().float().tolist(),
        resize=RESIZE_BY_TASK.get(task, "none"), outputs=OUTPUTS_BY_TASK.get(task, ""))


def export_model(model: Any, format: str = "onnx", imgsz: int | Sequence[int] | None = None, dynamic: bool = False,
                 batch: int = 1, half: bool = False, opset: int | None = None, simplify: bool = False,
                 file: str | Path | None = None) -> Path:
    """Export ``model`` (a zoo :class:`~zoo.model.Model`, left unchanged) and return the file written.

    ``format``: ``"onnx"`` or ``"torchscript"``. ``imgsz``: N or (H, W), multiples of the model's
    stride (default: the size ``zoo predict`` uses). ``dynamic``: batch, height and width symbolic.
    ``batch``: the example batch (a static graph's only one). ``half``: float16 weights and I/O (for
    CUDA runtimes; traced on CPU). ``opset``: ONNX opset (default 17). ``simplify``: onnxscript's
    optimizer on the ONNX graph. ``file``: where to write (default :func:`default_export_path`).
    Refusals are one-line :class:`~zoo.errors.ZooError` s (the CLI's exit code 2).

    A SAM (``task == "segment"``) exports as two ONNX graphs (:func:`export_segment`); the encoder's
    path is returned and the decoder lies beside it, ``<stem minus -encoder>-decoder.onnx``.
    """
    if getattr(model, "task", None) == "segment":
        return export_segment(model, format, imgsz, dynamic, batch, half, opset, simplify, file)[0]
    stride = model_stride(model)
    options = ExportOptions(format=format, imgsz=as_imgsz(model, imgsz), dynamic=dynamic, batch=int(batch),
                            half=half, opset=opset, simplify=simplify).checked(stride)
    path = Path(file) if file is not None else default_export_path(model, options.suffix)
    deployed = deployed_copy(model, half=half)
    head = deployed.model[-1] if hasattr(deployed, "model") else None
    detector = getattr(model, "task", None) == "detect"
    max_det = getattr(head, "max_det", None) if detector else None
    nms = detector and getattr(head, "nms_free", True) is False
    graph = ExportGraph(deployed, getattr(model, "task", "features"), max_det, nms).eval()
    dtype = torch.float16 if half else torch.float32
    example = torch.rand(options.batch, getattr(model, "ch", 3), *options.imgsz,
                         generator=torch.Generator().manual_seed(0)).to(dtype)
    # one output per task; a headless model's count is seen by running it once
    outputs = graph.output_names if graph.task in RESIZE_BY_TASK else output_names_for(graph, example)
    metadata = _metadata(model, graph, options, stride, outputs)
    if nms:
        metadata.nms_iou = float(head.nms_iou)
        metadata.outputs = NMS_CANDIDATES
    if options.format == "torchscript":
        return export_torchscript(graph, example, path, metadata)

    def explain(exc: BaseException) -> Exception:
        what = f"ONNX opset {options.onnx_opset}"
        return failing_row_error(deployed, example, exc, unsupported_op(exc), lambda row, inputs: onnx_bytes(
            row, inputs, options.onnx_opset), what, lambda op: opset_fix(op, options.onnx_opset))

    return export_onnx(graph, example, path, options, metadata, explain)


def export_segment(model: Any, format: str = "onnx", imgsz: int | Sequence[int] | None = None, dynamic: bool = False,
                   batch: int = 1, half: bool = False, opset: int | None = None, simplify: bool = False,
                   file: str | Path | None = None) -> tuple[Path, Path]:
    """A SAM as its image-encoder and prompt-decoder ONNX graphs (:func:`zoo.export.sam.export_sam`), with
    :func:`export_model`'s options; returns ``(encoder, decoder)``. ``file``: a folder or a path prefix
    (``best.onnx`` -> ``best-encoder.onnx`` / ``best-decoder.onnx``; default beside the checkpoint, else
    ``<name>-...`` in the current folder). Options the two graphs do not have are refused in one line."""
    refused = [flag for flag, given in ((f"--format {format}", format != "onnx"), ("--half", half),
                                        (f"--batch {batch}", batch != 1), ("--simplify", simplify)) if given]
    if refused:
        raise ConfigError(f"{refused[0]} does not apply to SAM: it exports as two float32 ONNX graphs (image encoder, "
                          "prompt decoder) whose batch axis is always dynamic; drop it")
    size = None
    if imgsz is not None:
        height, width = as_imgsz(model, imgsz)
        if height != width:
            raise ConfigError(f"--imgsz {height} {width}: SAM's image encoder takes a square; give one --imgsz N")
        size = height
    ExportOptions(format="onnx", imgsz=(1, 1), opset=opset).checked(1)  # the opset range and the onnx package
    target = Path(file) if file is not None else default_export_path(model, ".onnx")
    return export_sam(model, target, size, dynamic, opset=opset)
