#!/usr/bin/env python
"""Write the embedded shapes dataset to disk so it can be looked at and used by other tools.

    python tools/write_shapes.py OUT [--n-train 2000] [--n-val 200] [--size 256] [--seed 0]
                                     [--formats yolo coco crops]

Creates OUT/yolo (data.yaml, images/, labels/), OUT/coco (data.yaml, images/, annotations/
with RLE masks) and OUT/crops (ImageFolder classification crops). The images are the ones
``zoo train`` renders in memory when ``--data`` is not given (same seed and size -> same pixels).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.data.export import write_coco, write_crops, write_yolo  # noqa: E402
from zoo.data.shapes import ShapesConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (square)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="+", choices=("yolo", "coco", "crops"), default=["yolo", "coco", "crops"])
    args = parser.parse_args(argv)
    cfg = ShapesConfig(seed=args.seed, n_train=args.n_train, n_val=args.n_val, size=(args.size, args.size))
    if "yolo" in args.formats:
        print(f"YOLO:  {write_yolo(cfg, args.out / 'yolo')}")
    if "coco" in args.formats:
        print(f"COCO:  {write_coco(cfg, args.out / 'coco')}")
    if "crops" in args.formats:
        print(f"crops: {write_crops(cfg, args.out / 'crops')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
