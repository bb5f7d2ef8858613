"""Long CPU run: ``zoo train cfg/sam-tinyvit.yaml`` (MobileSAM layout, smallest scale) on shapes.

Segment Anything: arXiv:2304.02643; MobileSAM: arXiv:2306.14289. Prompts are simulated from the
shapes' instance masks (boxes with jitter, foreground/background points); validation reports mIoU
per prompt type, ``mIoU/box`` choosing best.pt. Starts from random weights unless ``--weights`` is
passed (e.g. a local MobileSAM checkpoint).

    python tools/train_sam_shapes.py [--epochs 12] [--imgsz 256] [--n-train 400] [extra zoo train flags]

Defaults are the README's run: scale n, 256 px (the shapes' native size: at 128 px the /16 embedding
is 8x8 and objects cover one to three tokens, which learns far slower per image), batch 4 with 8
prompt sets per image, box prompts only (the target is box-prompt mIoU; ``--sam-prompt-mix`` after
these flags overrides it).
"""
from __future__ import annotations

import sys

from shapes_run import shapes_cli

DEFAULTS = {"cfg": "cfg/sam-tinyvit.yaml", "epochs": 12, "imgsz": 256, "batch": 4, "n_train": 400, "n_val": 40,
            "lr": 1e-3, "project": "runs/segment", "name": "sam-shapes"}
FIXED = ["--scale", "n", "--warmup-epochs", "0.5", "--ema-decay", "0.999", "--clip-grad", "1.0",
         "--sam-sets", "8", "--sam-prompt-mix", "1,0,0"]

if __name__ == "__main__":
    sys.exit(shapes_cli(__doc__, DEFAULTS, FIXED))
