"""``zoo`` command line: ``info``, ``list`` and the task commands in :mod:`zoo.commands`.

User-input errors (configs, checkpoints, data, plugins) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from zoo.config import shipped_cfgs
from zoo.errors import ZooError

__all__ = ["main", "run", "shipped_cfgs"]

# name -> help; each is implemented by zoo/commands/<name>.py when present
TASK_COMMANDS = {
    "train": "train a model (task follows from the head)",
    "val": "validate a checkpoint or cfg on a dataset",
    "predict": "run a model on images and write overlays",
    "sweep": "build/measure/train every variant of a cfg",
    "benchmark": "latency, throughput and achieved GFLOP/s",
    "export": "write a model as ONNX or TorchScript (with its metadata)",
}


def _imgsz(values: list[int]) -> int | tuple[int, int]:
    return values[0] if len(values) == 1 else (values[0], values[1])


def _cmd_info(args: argparse.Namespace) -> int:
    from zoo.model import build_model  # imported here, not at the top: `zoo --help` must not load torch

    model = build_model(args.cfg, args.scale, args.nc, args.plugin, args.trust_plugins)
    if args.fuse:
        model.fuse()
    result = model.info(imgsz=_imgsz(args.imgsz), detailed=args.detailed)
    if getattr(args, "plot", None):
        from zoo.summary_plot import plot_rows

        out = plot_rows(model, result, Path(args.plot))
        print(f"saved {out}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from zoo.builder import load_entry_point_plugins, load_plugins
    from zoo.registry import MODULES

    load_entry_point_plugins()
    load_plugins(list(args.plugin))
    # stride: whether the wiring declares where the output sits; "trial run" rows make every build
    # that uses them run the model once to find the heads' strides
    print(f"{'module':<22}{'from':<12}{'stride':<11}{'wiring':<50}signature")
    for entry in MODULES:
        stride = "declared" if entry.wiring.spatial is not None else "trial run"
        print(f"{entry.name:<22}{entry.registered_by:<12}{stride:<11}{entry.wiring.describe:<50}{entry.signature()}")
    print("\n(any torch.nn module is available as nn.<Name>)\n\n"
          "A scale letter after a cfg's number picks that scale, as in Ultralytics: `yolov8s` is yolov8.yaml at scale s.\n"
          "shipped cfgs (give the name from any folder: `zoo info yolov10n`, `Model('yolov10n')`):")
    cfgs = shipped_cfgs()
    width = max((len(cfg.stem) for cfg in cfgs), default=0) + 2
    for cfg in cfgs:
        print(f"  {cfg.stem:<{width}}{cfg}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="import a .py file or module that registers extra blocks (repeatable)")
    parser.add_argument("--trust-plugins", action="store_true",
                        help="import the plugins a checkpoint's config names (runs their code: only for files you trust)")


def _count_arg(text: str) -> int:
    """A positive count written as 2000000000, 2_000_000_000 or 2e9."""
    try:
        value = float(text) if any(c in text.lower() for c in ".e") else int(text)
    except ValueError:
        value = 0
    if not (1 <= value < float("inf")) or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive count such as 2e9 or 2000000000, got {text!r}")
    return int(value)


def _limits(parser: argparse.ArgumentParser) -> None:
    if not any(a.dest == "max_params" for a in parser._actions):
        parser.add_argument("--max-params", type=_count_arg, metavar="N",
                            help="refuse, before allocating, a model with more than N parameters (or a row whose "
                                 "output at 640x640 holds more than N values); default 1e9")


def _run_command(name: str, args: argparse.Namespace) -> int:
    return importlib.import_module(f"zoo.commands.{name}").run(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``zoo`` parser. ``command``: the subcommand being run; of the task commands only its module is
    imported (they import torch, which `zoo --help` and `zoo info --help` do not need). None: all."""
    parser = argparse.ArgumentParser(prog="zoo", description="YAML-configured vision model zoo")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="per-row summary: params, GFLOPs, output shapes")
    info.add_argument("cfg", help="model YAML or checkpoint")
    info.add_argument("--scale", help="scale key (n/s/m/l/x/...)")
    info.add_argument("--nc", type=int, help="number of classes")
    info.add_argument("--imgsz", type=int, nargs="+", default=[640], help="image size: N or H W")
    info.add_argument("--fuse", action="store_true", help="summarise the fused model")
    info.add_argument("--detailed", action="store_true", help="also list every parameter tensor")
    info.add_argument("--plot", metavar="PNG", help="save a per-row params/GFLOPs bar chart")
    _common(info)
    _limits(info)
    info.set_defaults(func=_cmd_info)

    lst = sub.add_parser("list", help="registered modules and shipped cfgs")
    _common(lst)
    lst.set_defaults(func=_cmd_list)

    for name, help_text in TASK_COMMANDS.items():
        if importlib.util.find_spec(f"zoo.commands.{name}") is None:
            continue
        p = sub.add_parser(name, help=help_text)
        if command is not None and name != command:
            continue  # not the one being run: listed with its help line, its module left unimported
        # a command module that loads torch at import keeps its arguments in <name>_args.py (torch-free);
        # the module itself is imported when the command runs, so `zoo NAME --help` stays fast
        arguments = f"zoo.commands.{name}_args"
        if importlib.util.find_spec(arguments) is None:
            arguments = f"zoo.commands.{name}"
        importlib.import_module(arguments).add_arguments(p)
        if not any(a.dest == "plugin" for a in p._actions):
            _common(p)
        _limits(p)
        p.set_defaults(func=functools.partial(_run_command, name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    # the subcommand is the first word that is not an option: `zoo` itself takes no option but --help
    command = next((word for word in argv if not word.startswith("-")), "")
    args = build_parser(command).parse_args(argv)
    from zoo.limits import build_limits

    try:
        with build_limits(getattr(args, "max_params", None)):  # every model the command builds
            return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: one line (with how to resume, when the command knows)
        print(f"zoo {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


def _run_rank() -> int:
    """A DDP rank started by ``zoo.engine.ddp.launch``: the user's script, or the zoo command line."""
    from zoo.engine import ddp

    script, argv = ddp.rank_command() or (None, sys.argv[1:])
    if script:
        ddp.run_user_script(script, argv)
        return 0
    return main(argv)


if __name__ == "__main__":  # `python -m zoo.cli`: how torchrun starts each rank
    sys.exit(_run_rank())
