"""Build time of a cfg and its CPU forward latency at 640, unfused / fused / deployed.

    python tools/bench_build.py [cfg/yolov10n.yaml] [--imgsz 640] [--runs 10] [--threads 2]

Prints a markdown table (paste it into the README). Medians over ``--runs`` after a warm-up; the
machine's load matters, so run it on an idle machine and compare ratios, not absolute numbers.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from zoo import Model
from zoo.builder import parse_model
from zoo.config import resolve_spec


def median_ms(fn, runs: int, warmup: int = 2) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cfg", nargs="?", default="cfg/yolov10n.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    Model(args.cfg)  # first build pays for imports and registry set-up
    model = Model(args.cfg).eval()
    # the trial forward only runs when some row declares no spatial rule (see README, own blocks)
    declared = parse_model(resolve_spec(args.cfg)).strides is not None
    rows = [("build (parse + init" + (")" if declared else " + trial run)"),
             *median_ms(lambda: Model(args.cfg), args.runs, warmup=1))]
    if declared:
        rows.append(("build with trial_run=True", *median_ms(lambda: Model(args.cfg, trial_run=True), args.runs, warmup=1)))
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    with torch.inference_mode():
        rows.append((f"forward {args.imgsz} unfused", *median_ms(lambda: model(x), args.runs)))
        fused = copy.deepcopy(model).fuse()
        rows.append((f"forward {args.imgsz} fused", *median_ms(lambda: fused(x), args.runs)))
        deployed = copy.deepcopy(model).deploy()
        rows.append((f"forward {args.imgsz} deploy (fused, one-to-one only)", *median_ms(lambda: deployed(x), args.runs)))
    print(f"{args.cfg} on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, batch 1, median of {args.runs}")
    print("| step | median ms | p90 ms |\n|---|---|---|")
    for name, med, p90 in rows:
        print(f"| {name} | {med:.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
