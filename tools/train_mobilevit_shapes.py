#!/usr/bin/env python
"""Long run for the README table: a MobileViT-XXS classifier trained from scratch on shapes crops (CPU).

    nice python tools/train_mobilevit_shapes.py [extra zoo train options...]

Settings: 2000 train / 400 val single-object crops (cut from 128x128 shapes images), imgsz 64,
batch 32, AdamW lr 0.002, cosine schedule, 15 epochs, label smoothing 0.1, EMA. Prints the wall
time at the end; top-1 is in the epoch summaries and results.csv.
"""
from __future__ import annotations

import sys

from shapes_run import ROOT, run_timed

COMMAND = [
    "train", str(ROOT / "cfg" / "mobilevit-xxs-cls.yaml"),
    "--data", "shapes:n_train=2000,n_val=400,size=128",
    "--imgsz", "64", "--batch", "32", "--epochs", "15", "--workers", "1",
    "--optimizer", "AdamW", "--lr", "0.002", "--warmup-epochs", "1",
    "--device", "cpu", "--project", str(ROOT / "runs" / "benchmarks"), "--name", "mobilevit-xxs-shapes",
    "--no-progress",
]


def main() -> int:
    return run_timed(COMMAND + sys.argv[1:], threads_from_env=True)


if __name__ == "__main__":
    raise SystemExit(main())
