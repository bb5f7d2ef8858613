"""Shared plumbing of the ``tools/train_*_shapes.py`` long runs: build a ``zoo train`` command on the
embedded shapes dataset, print it, run it in-process and report the wall time."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_timed(command: list[str], threads_from_env: bool = False) -> int:
    """``zoo <command>`` in this process; ``threads_from_env`` sets torch's threads from ZOO_THREADS
    (default 1: on a small shared CPU one intra-op thread beats two competing for cores)."""
    if threads_from_env:
        import torch

        torch.set_num_threads(int(os.environ.get("ZOO_THREADS", "1")))
    from zoo.cli import main

    print("zoo " + " ".join(command), flush=True)
    start = time.time()
    code = main(command)
    print(f"wall time {time.time() - start:.0f}s ({(time.time() - start) / 60:.1f} min, exit code {code})", flush=True)
    return code


def shapes_cli(doc: str, defaults: dict, fixed: list[str], argv: list[str] | None = None) -> int:
    """A small CLI over ``zoo train`` on shapes: the sizes/lr/name from ``defaults`` can be overridden,
    ``fixed`` flags are always passed, and unknown flags go through to ``zoo train``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default=defaults["cfg"])
    for flag, kind in (("epochs", int), ("imgsz", int), ("batch", int), ("n-train", int), ("n-val", int),
                       ("lr", float)):
        p.add_argument(f"--{flag}", type=kind, default=defaults[flag.replace("-", "_")])
    p.add_argument("--project", default=defaults["project"])
    p.add_argument("--name", default=defaults["name"])
    args, extra = p.parse_known_args(argv)
    command = ["train", args.cfg, "--data", f"shapes:n_train={args.n_train},n_val={args.n_val}",
               "--imgsz", str(args.imgsz), "--epochs", str(args.epochs), "--batch", str(args.batch),
               "--lr", str(args.lr), *fixed, "--project", args.project, "--name", args.name, "--device", "cpu",
               *extra]
    return run_timed(command)
