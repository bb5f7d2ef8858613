"""Arguments of ``zoo predict`` (and its SAM prompts), torch-free: the CLI reads them for ``--help`` and
parsing without importing :mod:`zoo.commands.predict`, which loads torch."""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "add_prompt_arguments", "parse_point", "parse_box"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", metavar="CKPT_OR_CFG", help="checkpoint (.pt), model YAML, or an exported .onnx / .torchscript")
    p.add_argument("source", nargs="?", metavar="SOURCE",
                   help="an image, a folder of images (searched recursively) or a .txt list of image paths")
    p.add_argument("--source", dest="source_option", metavar="SOURCE", help="the same as the positional SOURCE")
    p.add_argument("--weights", help="load these weights into the model first")
    p.add_argument("--scale", help="scale key when building from a YAML cfg")
    p.add_argument("--imgsz", type=int, help="model input size (default: training size / cfg / 320 or 224)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold for drawn detections")
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--device", default="cpu", help="cpu, cuda or a GPU id")
    out = p.add_argument_group("output", "results go to PROJECT/NAME (numbered: predict, predict2, ...) "
                                         "unless --out names a folder, used as is")
    out.add_argument("--project", help="parent folder of predict runs (default runs/predict)")
    out.add_argument("--name", help="run folder name (default predict; numbered if taken)")
    out.add_argument("--exist-ok", action="store_true", help="reuse PROJECT/NAME instead of numbering")
    out.add_argument("--out", help="write into this folder as is (no numbering); not with --project / --name")
    out.add_argument("--save-txt", action="store_true",
                     help="labels/<image>.txt per image: 'cls cx cy w h score' (normalised) for detection, "
                          "'cls prob' top-5 for classification")
    out.add_argument("--save-json", action="store_true",
                     help="predictions.json: every image's boxes / scores / classes, top-5 or SAM masks")
    add_prompt_arguments(p)


def parse_point(text: str) -> tuple[float, float, int]:
    """``"x,y"`` or ``"x,y,label"`` -> ``(x, y, label)``; label defaults to 1 (foreground).

    Raises ``argparse.ArgumentTypeError`` so argparse prints a one-line usage error.
    """
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"point {text!r} must be x,y or x,y,label (label 1 or 0)") from None
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point {text!r}: label must be 1 (foreground) or 0 (background)")
    return x, y, label


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` -> a box; raises ``argparse.ArgumentTypeError`` when malformed."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"box {text!r} must be x1,y1,x2,y2") from None
    if x2 <= x1 or y2 <= y1:
        raise argparse.ArgumentTypeError(f"box {text!r} needs x2 > x1 and y2 > y1")
    return x1, y1, x2, y2


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """``--points x,y[,label] ...`` and ``--box x1,y1,x2,y2`` (repeatable) for ``zoo predict``."""
    parser.add_argument("--points", nargs="+", type=parse_point, default=[], metavar="X,Y[,LABEL]",
                        help="SAM point prompts in image pixels; label 1 foreground (default) or 0 background")
    parser.add_argument("--box", action="append", type=parse_box, default=[], metavar="X1,Y1,X2,Y2",
                        help="SAM box prompt in image pixels (repeat for one mask per box)")
    parser.add_argument("--everything", action="store_true",
                        help="SAM: segment everything from a grid of point prompts (no --points / --box needed)")
    parser.add_argument("--points-per-side", type=int, default=32, metavar="N",
                        help="with --everything: an N x N grid of point prompts (default 32)")
