"""Long CPU run: ``zoo train cfg/sam-tinyvit.yaml`` (MobileSAM layout, smallest scale) on shapes.

Segment Anything: arXiv:2304.02643; MobileSAM: arXiv:2306.14289. Prompts are simulated from the
shapes' instance masks (boxes with jitter, foreground/background points); validation reports mIoU
per prompt type, ``mIoU/box`` choosing best.pt. Starts from random weights unless ``--weights`` is
passed (e.g. a local MobileSAM checkpoint).

    python tools/train_sam_shapes.py [--epochs 8] [--imgsz 160] [--n-train 160] [extra zoo train flags]
"""
from __future__ import annotations

import sys

from shapes_run import shapes_cli

DEFAULTS = {"cfg": "cfg/sam-tinyvit.yaml", "epochs": 8, "imgsz": 160, "batch": 8, "n_train": 160, "n_val": 30,
            "lr": 1e-3, "project": "runs/segment", "name": "sam-shapes"}
FIXED = ["--warmup-epochs", "0.5", "--ema-decay", "0.999", "--clip-grad", "1.0"]

if __name__ == "__main__":
    sys.exit(shapes_cli(__doc__, DEFAULTS, FIXED))
