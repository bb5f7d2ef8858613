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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMAND = [
    "train", str(ROOT / "cfg" / "yolov10n.yaml"),
    "--data", "shapes:n_train=1600,n_val=200,size=128,min_scale=0.15,max_scale=0.45,max_objects=4",
    "--imgsz", "128", "--batch", "16", "--epochs", "20", "--workers", "1",
    "--optimizer", "AdamW", "--lr", "0.002", "--warmup-epochs", "1",
    "--device", "cpu", "--project", str(ROOT / "runs" / "benchmarks"), "--name", "yolov10n-shapes",
    "--no-progress",
]


def main() -> int:
    import torch

    # On a small shared CPU one intra-op thread is much faster than two competing for cores.
    torch.set_num_threads(int(__import__("os").environ.get("ZOO_THREADS", "1")))
    from zoo.cli import main as zoo_main

    t0 = time.time()
    rc = zoo_main(COMMAND + sys.argv[1:])
    print(f"wall time: {(time.time() - t0) / 60:.1f} min (exit code {rc})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
