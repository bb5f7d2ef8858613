"""``zoo benchmark CFG_OR_CKPT``: median/p90 latency, images/s and achieved GFLOP/s (method: zoo.latency).

An exported ``.onnx`` (its ONNX Runtime session: the CPU provider, the CUDA one with ``--device cuda``)
or ``.torchscript`` file is timed by the same method and printed in the same format; its size and
batch default to the ones it was exported at, and its GFLOPs are not counted (``n/a``).
"""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="model YAML, a checkpoint that carries its config, or an exported .onnx / .torchscript")
    p.add_argument("--scale", help="scale key of the cfg (n/s/m/...)")
    p.add_argument("--nc", type=int, help="number of classes")
    p.add_argument("--imgsz", type=int, nargs="+", help="image size N or H W (default: the cfg's imgsz, else 640)")
    p.add_argument("--batch", type=int, help="images per forward (default 1; an exported file: its batch)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, N or auto")
    p.add_argument("--half", action="store_true", help="float16 weights and inputs (CUDA only)")
    p.add_argument("--fuse", action="store_true", help="fuse conv+BN and re-parameterise before timing "
                                                       "(also drops training-only branches)")
    p.add_argument("--runs", type=int, default=20, help="timed runs")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); 1 gives steadier "
                                               "numbers on a machine shared with other jobs")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        if args.threads < 1:
            from zoo.latency import BenchmarkError

            raise BenchmarkError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from zoo.export import is_exported_file

    if is_exported_file(args.cfg):
        return _run_exported(args)
    from zoo.latency import benchmark, format_result
    from zoo.model import build_model

    model = build_model(args.cfg, args.scale, args.nc, args.plugin, args.trust_plugins)
    if args.fuse:
        model.deploy()
    if args.imgsz:
        imgsz = args.imgsz[0] if len(args.imgsz) == 1 else (args.imgsz[0], args.imgsz[1])
    else:
        imgsz = int(model.yaml.get("imgsz") or 640)
    result = benchmark(model, imgsz=imgsz, batch=args.batch or 1, device=args.device, half=args.half,
                       runs=args.runs, warmup=args.warmup, copy_model=False)
    title = model.name + (f" (scale {model.scale})" if model.scale else "") + (" fused" if args.fuse else "")
    print(format_result(title, result))
    return 0


def _run_exported(args: argparse.Namespace) -> int:
    from zoo.export import load_exported
    from zoo.latency import BenchmarkError, benchmark_exported, format_result

    for flag, given in (("--scale", args.scale), ("--nc", args.nc), ("--fuse", args.fuse)):
        if given:
            raise BenchmarkError(f"{flag} does not apply to an exported file ({args.cfg}): it is a deployed graph")
    model = load_exported(args.cfg, args.device, threads=args.threads)
    if args.half and not model.half:
        raise BenchmarkError(f"--half: {args.cfg} is a float32 graph; export it with --half to time float16")
    imgsz = None
    if args.imgsz:
        imgsz = args.imgsz[0] if len(args.imgsz) == 1 else (args.imgsz[0], args.imgsz[1])
    result = benchmark_exported(model, imgsz=imgsz, batch=args.batch, runs=args.runs, warmup=args.warmup)
    title = f"{model.metadata.model or model.path.stem} ({model.path.name})"
    print(format_result(title, result))
    return 0
