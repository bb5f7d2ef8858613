"""Long CPU run: the CPU-sized RT-DETR (cfg/rtdetr-shapes.yaml) on the embedded shapes dataset.

RT-DETR: arXiv:2304.08069. Shows the detector learning (mAP50 rising epoch over epoch) on a
laptop-class CPU; the per-epoch figures land in ``<project>/<name>/results.csv``.

    python tools/train_rtdetr_shapes.py [--epochs 20] [--imgsz 128] [--n-train 320] [extra zoo train flags]

Measured with the defaults (2 shared CPU cores, ~20 s an epoch, 578 s wall): val mAP50 by epoch
0.003 0.002 0.003 0.012 0.039 0.074 0.076 0.127 0.147 0.160 0.174 0.187 0.208 0.210 0.212 0.210
0.216 0.221 0.226 0.227 (mAP50-95 0.137 at epoch 20). The first epochs read near zero partly because
BatchNorm's running statistics (momentum 0.03) lag the fast-moving weights; runs of a few dozen
steps say nothing about whether the detector learns.
"""
from __future__ import annotations

import sys

from shapes_run import shapes_cli

DEFAULTS = {"cfg": "cfg/rtdetr-shapes.yaml", "epochs": 20, "imgsz": 128, "batch": 8, "n_train": 320, "n_val": 60,
            "lr": 4e-4, "project": "runs/detect", "name": "rtdetr-shapes"}
FIXED = ["--warmup-epochs", "0.5", "--clip-grad", "0.1", "--ema-decay", "0.999"]

if __name__ == "__main__":
    sys.exit(shapes_cli(__doc__, DEFAULTS, FIXED))
