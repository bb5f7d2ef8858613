"""``zoo benchmark CFG_OR_CKPT``: median/p90 latency, images/s and achieved GFLOP/s (method: zoo.latency)."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="model YAML, or a checkpoint that carries its config")
    p.add_argument("--scale", help="scale key of the cfg (n/s/m/...)")
    p.add_argument("--nc", type=int, help="number of classes")
    p.add_argument("--imgsz", type=int, nargs="+", help="image size N or H W (default: the cfg's imgsz, else 640)")
    p.add_argument("--batch", type=int, default=1, help="images per forward")
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
    from zoo.latency import benchmark, format_result
    from zoo.model import build_model

    model = build_model(args.cfg, args.scale, args.nc, args.plugin, args.trust_plugins)
    if args.fuse:
        model.deploy()
    if args.imgsz:
        imgsz = args.imgsz[0] if len(args.imgsz) == 1 else (args.imgsz[0], args.imgsz[1])
    else:
        imgsz = int(model.yaml.get("imgsz") or 640)
    result = benchmark(model, imgsz=imgsz, batch=args.batch, device=args.device, half=args.half,
                       runs=args.runs, warmup=args.warmup, copy_model=False)
    title = model.name + (f" (scale {model.scale})" if model.scale else "") + (" fused" if args.fuse else "")
    print(format_result(title, result))
    return 0
