"""``zoo train CFG_OR_CKPT``: train any model; the task (detect / classify / ...) follows from its head.

Without ``--data`` the embedded shapes dataset is used, so the command works on a fresh machine.
``--nproc N`` (CPU, gloo) or ``--device 0,1`` (CUDA, NCCL) re-launches the command under torchrun.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from zoo.engine.train_options import (BAD_KEY_VALUE, check_numbers, cpu_default_notes, document_defaults,
                                      install_key_value, unknown_key_message)
from zoo.errors import TrainSetupError

__all__ = ["add_arguments", "run", "reconstruct_argv"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", nargs="?", help="model YAML, or a checkpoint that carries its config (not needed with --resume)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="data.yaml (YOLO or COCO layout), COCO .json, ImageFolder dir, or "
                                  "'shapes[:key=value,...]'")
    g.add_argument("--imgsz", type=int, help="square input size, rounded up to a multiple of the model's stride")
    g.add_argument("--batch", type=int, help="total batch size over all processes")
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per rank")
    g.add_argument("--fliplr", type=float, default=0.5, help="probability of a horizontal flip")
    g.add_argument("--flipud", type=float, default=0.0, help="probability of a vertical flip")
    g.add_argument("--scale-aug", type=float, default=0.3, help="random zoom range (+/-) for detection")
    g.add_argument("--hsv-h", type=float, default=0.015, help="random hue shift (fraction of the hue circle)")
    g.add_argument("--hsv-s", type=float, default=0.7, help="random saturation gain range")
    g.add_argument("--hsv-v", type=float, default=0.4, help="random brightness (value) gain range")

    g = p.add_argument_group("model")
    g.add_argument("--scale", help="scale key of the cfg (n/s/m/...)")
    g.add_argument("--weights", help="start from these weights (any checkpoint Model.load accepts)")
    g.add_argument("--freeze", nargs="+", default=[], metavar="KEY",
                   help="freeze rows ('0', '0-9') or parameter-name prefixes (task names such as image_encoder)")

    g = p.add_argument_group("promptable segmentation (SAM)")
    g.add_argument("--sam-sets", type=int, default=4, help="instances (prompt sets) per image in a training step")
    g.add_argument("--sam-box-jitter", type=float, default=0.1,
                   help="std of the box-prompt noise as a fraction of the box side")
    g.add_argument("--sam-max-points", type=int, default=4, help="most point prompts (foreground + background)")
    g.add_argument("--sam-correction", type=float, default=0.0,
                   help="probability of a correction point from the error region of a first prediction")
    g.add_argument("--sam-prompt-mix", metavar="BOX,POINT,POINTS",
                   help="relative frequency of box / single-point / multi-point prompts in training")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="passes over the training set")
    g.add_argument("--optimizer", default="AdamW", choices=("AdamW", "Adam", "SGD"), help="optimizer")
    g.add_argument("--lr", type=float, help="base learning rate")
    g.add_argument("--lrf", type=float, default=0.01, help="final lr as a fraction of --lr")
    g.add_argument("--schedule", default="cosine", choices=("cosine", "linear"), help="learning-rate decay after warm-up")
    g.add_argument("--momentum", type=float, default=0.937, help="SGD momentum / Adam beta1")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 0.0005 SGD / 0.01 AdamW)")
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="epochs of linear learning-rate warm-up")
    g.add_argument("--warmup-bias-lr", type=float, help="bias lr at the start of warm-up (default 0.1 SGD / 0 Adam)")
    g.add_argument("--lr-scale", action="append", default=[], metavar="KEY=FACTOR",
                   help="per-part learning-rate factor, e.g. image_encoder=0.1 or 0-9=0.5 (repeatable)")
    g.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="EMA of weights")
    g.add_argument("--ema-decay", type=float, default=0.9999, help="EMA decay (ramped up over the first updates)")
    g.add_argument("--clip-grad", type=float, default=10.0, help="max gradient norm (0: off)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="mixed precision on CUDA")
    g.add_argument("--channels-last", action="store_true",
                   help="train with channels-last (NHWC) weights and activations (faster conv kernels on CPU)")
    g.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the classification loss")
    g.add_argument("--box", type=float, default=7.5, help="YOLO box (CIoU) loss gain")
    g.add_argument("--cls", type=float, default=0.5, help="YOLO classification loss gain")
    g.add_argument("--dfl", type=float, default=1.5, help="YOLO distribution focal loss gain")

    g = p.add_argument_group("run")
    g.add_argument("--device", default="", help="cpu, cuda, 0 or 0,1 (several ids: DDP); default: CUDA if present")
    g.add_argument("--nproc", type=int, default=1, help="DDP processes on CPU (gloo)")
    g.add_argument("--find-unused-parameters", action="store_true", help="DDP option for heads with unused branches")
    g.add_argument("--seed", type=int, default=0, help="random seed (weights, data order, augmentation)")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    g.add_argument("--project", help="parent folder of runs (default runs/<task>)")
    g.add_argument("--name", default="train", help="run folder name (numbered if taken)")
    g.add_argument("--exist-ok", action="store_true", help="reuse --name instead of numbering")
    g.add_argument("--resume", nargs="?", const="latest", metavar="LAST_PT",
                   help="continue an interrupted run from its weights/last.pt (default: the newest under runs/)")
    g.add_argument("--val", action=argparse.BooleanOptionalAction, default=True, help="validate every epoch")
    g.add_argument("--conf", type=float, default=0.001, help="score threshold for mAP")
    g.add_argument("--max-det", type=int, default=300, help="most detections per image in validation")
    g.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="write results.png, train_batch.jpg and val_predictions.jpg")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bars")
    p.epilog = ("Options may also be given Ultralytics-style as key=value (epochs=3 imgsz=320 model=cfg/yolov10n.yaml). "
                "Unset --data/--imgsz/--batch/--epochs follow the device: on CUDA 2000 shapes images, the cfg's "
                "imgsz, batch 16, 10 epochs; on CPU a run of about ten minutes on two cores (also a higher "
                "AdamW lr and, for SAM, box prompts only), announced in one line with its ETA.")
    document_defaults(p, {**cpu_default_notes(), "scale": "the one in the cfg's file name (yolov10s.yaml: s), "
                                                       "else its first",
                          "weights": "none: random initial weights", "freeze": "nothing frozen",
                          "lr_scale": "none: every part at --lr"})
    install_key_value(p)


def reconstruct_argv(args: argparse.Namespace) -> list[str]:
    """The ``zoo train`` command line that produces ``args`` (used to start DDP ranks)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    if not any(a.dest == "plugin" for a in parser._actions):
        parser.add_argument("--plugin", action="append", default=[])
        parser.add_argument("--trust-plugins", action="store_true")
    argv: list[str] = ["train"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if not action.option_strings:
            if value is not None:
                argv.append(str(value))
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            if value != action.default:
                argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(action, argparse._StoreTrueAction):
            if value:
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for v in value or []:
                argv += [flag, str(v)]
        elif action.nargs in ("+", "*"):
            if value:
                argv += [flag, *map(str, value)]
        elif value is not None and value != action.default:
            argv += [flag, str(value)]
    return argv


def _latest_last_pt() -> Path:
    found = sorted(Path("runs").glob("**/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise TrainSetupError("--resume: no runs/**/weights/last.pt found; pass the checkpoint path")
    return found[-1]


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: `zoo train --help` must not load torch
    from zoo.engine import ddp
    from zoo.engine.trainer import Trainer

    bad = getattr(args, BAD_KEY_VALUE, None)
    if hasattr(args, BAD_KEY_VALUE):
        delattr(args, BAD_KEY_VALUE)
    if bad:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        raise TrainSetupError(unknown_key_message([a.dest for a in parser._actions], bad))
    problems = check_numbers(args)
    if problems:
        raise TrainSetupError("; ".join(problems))
    if args.resume == "latest":
        args.resume = str(_latest_last_pt())
    if not args.cfg and not args.resume:
        raise TrainSetupError("give a model (a cfg such as cfg/yolov10n.yaml, or a checkpoint) or --resume LAST_PT")
    info = ddp.dist_info()
    try:
        gpu_ids = ddp.cuda_device_ids(args.device)
    except ValueError as exc:
        raise TrainSetupError(str(exc)) from None
    if args.nproc < 1:
        raise TrainSetupError("--nproc must be >= 1")
    if len(gpu_ids) > 1 and args.nproc > 1 and args.nproc != len(gpu_ids):
        raise TrainSetupError(f"--nproc {args.nproc} disagrees with the {len(gpu_ids)} GPUs in --device {args.device}")
    world = max(args.nproc, len(gpu_ids))
    if world > 1 and not info.distributed:
        if not gpu_ids and args.device.strip().lower() not in ("", "cpu", "auto"):
            raise TrainSetupError(f"--device {args.device} with --nproc {args.nproc}")
        return ddp.launch(world, reconstruct_argv(args))
    result = Trainer(args).train()
    if info.main:
        print(result.message)
    return 0 if result.status == "done" else 1
