"""Long CPU run: ``zoo train cfg/sam-tinyvit.yaml`` (MobileSAM layout, smallest scale) on shapes.

Segment Anything: arXiv:2304.02643; MobileSAM: arXiv:2306.14289. Prompts are simulated from the
shapes' instance masks (boxes with jitter, foreground/background points); validation reports mIoU
per prompt type, ``mIoU/box`` choosing best.pt. Starts from random weights unless ``--weights`` is
passed (e.g. a local MobileSAM checkpoint).

    python tools/train_sam_shapes.py [--epochs 8] [--imgsz 160] [--n-train 160] [extra zoo train flags]
"""
from __future__ import annotations

import argparse
import sys
import time

from zoo.cli import main


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="cfg/sam-tinyvit.yaml")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n-train", type=int, default=160)
    p.add_argument("--n-val", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--project", default="runs/segment")
    p.add_argument("--name", default="sam-shapes")
    args, extra = p.parse_known_args(argv)
    command = ["train", args.cfg, "--data", f"shapes:n_train={args.n_train},n_val={args.n_val}",
               "--imgsz", str(args.imgsz), "--epochs", str(args.epochs), "--batch", str(args.batch),
               "--lr", str(args.lr), "--warmup-epochs", "0.5", "--ema-decay", "0.999", "--clip-grad", "1.0",
               "--project", args.project, "--name", args.name, "--device", "cpu", *extra]
    print("zoo " + " ".join(command), flush=True)
    start = time.time()
    code = main(command)
    print(f"wall time {time.time() - start:.0f}s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(cli())
