#!/usr/bin/env python
"""Long run for the README table: YOLOv10-n trained from scratch on the embedded shapes dataset (CPU).

    nice python tools/train_yolov10n_shapes.py [extra zoo train options...]

Settings: 1600 train / 200 val images rendered at 128x128 with objects 15-45 % of the image side
(at most 4 per image), imgsz 128, batch 16, AdamW lr 0.002, cosine schedule, 20 epochs, EMA. Prints the wall time and the final / best mAP50 at the end.
Extra options are appended to the ``zoo train`` command line (later options win), e.g.
``--epochs 5`` for a shorter check or ``--device cuda``.
"""
from __future__ import annotations

import sys

from shapes_run import ROOT, run_timed

COMMAND = [
    "train", str(ROOT / "cfg" / "yolov10n.yaml"),
    "--data", "shapes:n_train=1600,n_val=200,size=128,min_scale=0.15,max_scale=0.45,max_objects=4",
    "--imgsz", "128", "--batch", "16", "--epochs", "20", "--workers", "1",
    "--optimizer", "AdamW", "--lr", "0.002", "--warmup-epochs", "1",
    "--device", "cpu", "--project", str(ROOT / "runs" / "benchmarks"), "--name", "yolov10n-shapes",
    "--no-progress",
]


def main() -> int:
    return run_timed(COMMAND + sys.argv[1:], threads_from_env=True)


if __name__ == "__main__":
    raise SystemExit(main())
