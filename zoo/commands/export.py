"""``zoo export MODEL``: write a model as ONNX or TorchScript that runs without zoo's Python code.

MODEL is a shipped cfg's name, a model YAML or a checkpoint. The file goes beside the checkpoint, else
to ``<name>.onnx`` in the current folder (``--output`` to choose). It takes ``(B, 3, H, W)`` RGB in
0..1, normalises inside, and returns detections ``(B, K, 6)`` (NMS-free) or class probabilities;
its metadata (names, imgsz, stride, task, zoo version, preprocessing) is all a runtime needs.
``zoo predict / val / benchmark FILE`` run it.

A SAM (segment) model writes two ONNX graphs, ``<name>-encoder.onnx`` (once per image) and
``<name>-decoder.onnx`` (per prompt), and reports both (:mod:`zoo.export.sam`; ``--output``: a folder or a
path prefix).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

# torch and zoo.export are imported inside run: `zoo export --help` needs only add_arguments

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", metavar="MODEL", help="shipped cfg name (yolov10n), model YAML or checkpoint (.pt)")
    p.add_argument("--format", default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="N",
                   help="input size N or H W, multiples of the model's stride (default: the size zoo predict uses)")
    p.add_argument("--dynamic", action="store_true", help="batch, height and width free in the graph")
    p.add_argument("--batch", type=int, default=1, help="batch of the example input (a static graph's only batch)")
    p.add_argument("--half", action="store_true",
                   help="float16 weights and I/O, for GPU runtimes (traced on CPU: slow to export; runs on CPU too, "
                        "without a speed-up)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    p.add_argument("--simplify", action="store_true", help="run onnxscript's graph optimizer on the ONNX graph")
    p.add_argument("--output", metavar="FILE", help="file to write (default: beside the checkpoint, else <name>.onnx)")
    p.add_argument("--scale", help="scale key when building from a YAML cfg")
    p.add_argument("--weights", help="load these weights into the model first")


def run(args: argparse.Namespace) -> int:
    from zoo.export import export_model
    from zoo.export.exporter import export_segment
    from zoo.model import build_model

    start = time.perf_counter()
    model = build_model(args.cfg, args.scale, None, list(args.plugin), bool(args.trust_plugins))
    if args.weights:
        model.load(args.weights, verbose=False).require_fit("exporting it would write random weights")
    options = dict(format=args.format, imgsz=args.imgsz, dynamic=args.dynamic, batch=args.batch, half=args.half,
                   opset=args.opset, simplify=args.simplify, file=args.output)
    if model.task == "segment":
        encoder, decoder = export_segment(model, **options)
        seconds = time.perf_counter() - start
        sizes = " + ".join(f"{Path(p).stat().st_size / 1e6:.1f}" for p in (encoder, decoder))
        print(f"exported {encoder} and {decoder} ({sizes} MB, onnx, segment: image encoder + prompt decoder) "
              f"in {seconds:.1f}s")
        return 0
    path = export_model(model, **options)
    seconds = time.perf_counter() - start
    size_mb = Path(path).stat().st_size / 1e6
    print(f"exported {path} ({size_mb:.1f} MB, {args.format}, {model.task}) in {seconds:.1f}s")
    return 0
