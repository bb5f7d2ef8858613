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

import argparse
import sys
import time

from zoo.cli import main


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="cfg/rtdetr-shapes.yaml")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n-train", type=int, default=320)
    p.add_argument("--n-val", type=int, default=60)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--project", default="runs/detect")
    p.add_argument("--name", default="rtdetr-shapes")
    args, extra = p.parse_known_args(argv)
    command = ["train", args.cfg, "--data", f"shapes:n_train={args.n_train},n_val={args.n_val}",
               "--imgsz", str(args.imgsz), "--epochs", str(args.epochs), "--batch", str(args.batch),
               "--lr", str(args.lr), "--warmup-epochs", "0.5", "--clip-grad", "0.1", "--ema-decay", "0.999",
               "--project", args.project, "--name", args.name, "--device", "cpu", *extra]
    print("zoo " + " ".join(command), flush=True)
    start = time.time()
    code = main(command)
    print(f"wall time {time.time() - start:.0f}s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(cli())
