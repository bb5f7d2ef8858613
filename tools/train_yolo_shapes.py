#!/usr/bin/env python
"""Long run for the README table: a YOLO detector trained from scratch on the embedded shapes dataset (CPU).

    nice python tools/train_yolo_shapes.py [MODEL] [extra zoo train options...]

MODEL is a shipped cfg name (default yolov10n; yolo11n, yolov8n, ...): the same run for every model.

Settings: 1600 train / 200 val images rendered at 128x128 with objects 15-45 % of the image side
(at most 4 per image), imgsz 128, batch 16, AdamW lr 0.002, cosine schedule, 20 epochs, EMA. Prints the wall time and the final / best mAP50 at the end.
Extra options are appended to the ``zoo train`` command line (later options win), e.g.
``--epochs 5`` for a shorter check or ``--device cuda``.
"""
from __future__ import annotations

import sys

from shapes_run import ROOT, run_timed

COMMAND = [
    "train", "MODEL",
    "--data", "shapes:n_train=1600,n_val=200,size=128,min_scale=0.15,max_scale=0.45,max_objects=4",
    "--imgsz", "128", "--batch", "16", "--epochs", "20", "--workers", "1",
    "--optimizer", "AdamW", "--lr", "0.002", "--warmup-epochs", "1",
    "--device", "cpu", "--project", str(ROOT / "runs" / "benchmarks"), "--name", "MODEL-shapes",
    "--no-progress",
]


def main() -> int:
    extra = sys.argv[1:]
    model = extra.pop(0) if extra and not extra[0].startswith("-") else "yolov10n"
    command = [model if a == "MODEL" else a.replace("MODEL", model) for a in COMMAND]
    return run_timed(command + extra, threads_from_env=True)


if __name__ == "__main__":
    raise SystemExit(main())
