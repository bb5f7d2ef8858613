"""``zoo train`` options: Ultralytics-style ``key=value`` arguments, defaults that follow the device, and
checks that turn bad values into one line (exit code 2) before any run folder is made.

Torch-free at import: ``zoo train --help`` uses :func:`install_key_value` and :func:`document_defaults`.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from zoo.errors import TrainSetupError

__all__ = ["install_key_value", "document_defaults", "rewrite_key_value", "SizeDefaults", "size_defaults",
           "check_numbers", "round_imgsz", "valid_prefixes", "fill_size_defaults", "stride_multiple", "freeze", "apply_freeze", "BAD_KEY_VALUE"]

BAD_KEY_VALUE = "bad_key_value"  # dest holding key=value tokens whose key names no option
_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.*)$", re.S)
# Ultralytics names -> ours ("model" is the positional cfg)
ALIASES = {"model": "cfg", "cfg": "cfg", "lr0": "lr"}
TRUE, FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


@dataclass(frozen=True)
class SizeDefaults:
    """What an option left unset means on a device: images in the embedded shapes set, size, batch, epochs."""
    n_train: int | None  # None: the shapes set's own default
    n_val: int | None
    imgsz: int | None  # None: the cfg's imgsz or the task's default
    batch: int
    epochs: int

    def describe(self, imgsz: int, used: Sequence[str]) -> str:
        parts = {"data": f"{self.n_train}/{self.n_val} shapes images (train/val)", "imgsz": f"imgsz {imgsz}",
                 "batch": f"batch {self.batch}", "epochs": f"{self.epochs} epochs"}
        return ", ".join(parts[k] for k in parts if k in used)


# on CUDA: what zoo train has always used; on CPU: a run that finishes in minutes on a few cores (validation
# costs far more per image than training on CPU today, hence the small val sets)
CUDA_DEFAULTS = SizeDefaults(None, None, None, 16, 10)
CPU_DEFAULTS = {
    "detect": SizeDefaults(256, 32, 160, 8, 3),
    "classify": SizeDefaults(256, 32, 96, 16, 3),
    "segment": SizeDefaults(48, 8, None, 4, 2),  # SAM: the encoder's input size stays the cfg's
}
CPU_FALLBACK = SizeDefaults(128, 32, None, 8, 2)


def size_defaults(task: str, cuda: bool) -> SizeDefaults:
    return CUDA_DEFAULTS if cuda else CPU_DEFAULTS.get(task, CPU_FALLBACK)


# ---------------------------------------------------------------------------------------- key=value
def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)}


def rewrite_key_value(parser: argparse.ArgumentParser, tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """``epochs=3 imgsz=320`` -> ``--epochs 3 --imgsz 320``. Returns (argv, tokens whose key is unknown).

    A token right after an option that takes one value (``--lr-scale image_encoder=0.1``) is that value,
    and so is anything after ``--``."""
    options = _options(parser)
    flags = {s: a for a in options.values() for s in a.option_strings}
    out: list[str] = []
    unknown: list[str] = []
    takes_value = False
    tokens = list(tokens)
    for i, tok in enumerate(tokens):
        if tok == "--":
            out += tokens[i:]
            break
        if takes_value:
            out.append(tok)
            takes_value = False
            continue
        if tok.startswith("-"):
            action = flags.get(tok)
            takes_value = action is not None and action.nargs is None and not _is_flag(action)
            out.append(tok)
            continue
        m = _KEY_VALUE.match(tok)
        if not m:
            out.append(tok)
            continue
        key, value = m.group(1).replace("-", "_"), m.group(2)
        dest = ALIASES.get(key, key)
        if dest == "cfg":
            out.append(value)
        elif dest in options:
            out += _as_flags(options[dest], value)
        else:
            unknown.append(tok)
    return out, unknown


def _is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction)


def _as_flags(action: argparse.Action, value: str) -> list[str]:
    flag = action.option_strings[0]
    if _is_flag(action):
        v = value.strip().lower()
        on = v in TRUE or (v not in FALSE and v != "")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [flag if on else "--no-" + flag[2:]]
        return [flag] if on else []
    if action.nargs in ("+", "*"):
        return [flag, *[v for v in re.split(r"[,\s]+", value.strip("[]() ")) if v]]
    return [flag, value]


def install_key_value(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` accept ``key=value`` tokens wherever they appear (the subcommand parser receives
    its own tokens through ``parse_known_args``). Unknown keys are kept for :func:`unknown_key_error`."""
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None):  # type: ignore[no-untyped-def]
        if args is None:
            import sys

            args = sys.argv[1:]
        argv, unknown = rewrite_key_value(parser, args)
        ns, rest = original(argv, namespace)
        setattr(ns, BAD_KEY_VALUE, unknown)
        return ns, rest

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def unknown_key_message(parser_dests: Sequence[str], tokens: Sequence[str]) -> str:
    key = _KEY_VALUE.match(tokens[0]).group(1).replace("-", "_")  # type: ignore[union-attr]
    close = difflib.get_close_matches(key, list(parser_dests) + list(ALIASES), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see zoo train --help"
    return f"unknown argument '{tokens[0]}': no option '{key}'{hint}"


# ---------------------------------------------------------------------------------------------- help
def document_defaults(parser: argparse.ArgumentParser, notes: dict[str, str] | None = None) -> None:
    """Append ``(default: ...)`` to every option's help (``notes`` give the text for defaults that are
    resolved later, e.g. by device)."""
    notes = notes or {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        text = (action.help or "").replace("%", "%%") if "%(" not in (action.help or "") else action.help or ""
        if action.dest in notes:
            text += f" (default: {notes[action.dest]})"
        elif "default" not in text and action.option_strings:
            default = action.default
            if isinstance(action, argparse.BooleanOptionalAction) or not (
                    default is None or default is False or default == [] or default == ""):
                shown = " ".join(map(str, default)) if isinstance(default, list) else default
                text += f" (default: {shown})"
        action.help = text.strip() or action.dest.replace("_", " ")


# -------------------------------------------------------------------------------------------- checks
def check_numbers(args: argparse.Namespace) -> list[str]:
    """One message per bad value among the options that need to be positive / in range."""
    problems = []
    for name, low in (("batch", 1), ("epochs", 1), ("imgsz", 8), ("workers", 0), ("nproc", 1), ("sam_sets", 1)):
        value = getattr(args, name, None)
        if value is not None and int(value) < low:
            problems.append(f"--{name.replace('_', '-')} {value}: must be >= {low}")
    for name in ("lr", "lrf", "warmup_epochs", "clip_grad", "ema_decay", "weight_decay", "label_smoothing"):
        value = getattr(args, name, None)
        if value is not None and (not math.isfinite(float(value)) or float(value) < 0):
            problems.append(f"--{name.replace('_', '-')} {value}: must be a finite number >= 0")
    for entry in getattr(args, "lr_scale", None) or []:
        key, eq, factor = str(entry).partition("=")
        try:
            ok = bool(eq and key.strip()) and math.isfinite(float(factor)) and float(factor) >= 0
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"--lr-scale {entry}: expected KEY=FACTOR with a number >= 0, e.g. image_encoder=0.1 "
                            "or 0-9=0.5")
    return problems


def round_imgsz(imgsz: int, stride: int) -> int:
    return int(math.ceil(imgsz / stride) * stride)


def valid_prefixes(model: Any, task: Any) -> str:
    """What ``--freeze`` / ``--lr-scale`` accept for this model, for an error message."""
    n = len(model.model)
    named = [k for k in ("image_encoder", "prompt_encoder", "mask_decoder")
             if task.parameter_prefixes(model, k) != [k]]
    parts = [f"row numbers 0-{n - 1} or ranges such as 0-{min(9, n - 1)}"]
    if named:
        parts.append("names " + ", ".join(named))
    first = next((name for name, _ in model.named_parameters()), "model.0.")
    parts.append(f"or parameter-name prefixes such as {'.'.join(first.split('.')[:3])}")
    return "; ".join(parts)


def max_stride(model: Any) -> int:
    stride = getattr(model, "stride", None)
    try:
        return max(1, int(max(float(s) for s in stride.flatten().tolist())))
    except (AttributeError, TypeError, ValueError):
        return 1


def fill_size_defaults(args: argparse.Namespace, task: str, cuda: bool) -> str:
    """Fill the size options left unset for this device and task, before the data is resolved (the
    shapes set renders at the input size). Returns a note on the CPU defaults used ("" when none were)."""
    d = size_defaults(task, cuda)
    used: list[str] = []
    if getattr(args, "imgsz", None) is None and d.imgsz is not None:
        args.imgsz = d.imgsz
        used.append("imgsz")
    for name, value in (("batch", d.batch), ("epochs", d.epochs)):
        if getattr(args, name, None) is None:
            setattr(args, name, value)
            used.append(name)
    if getattr(args, "data", None) is None and d.n_train:
        args.data = f"shapes:n_train={d.n_train},n_val={d.n_val}"
        used.append("data")
    if not used or cuda:
        return ""
    return (f"CPU defaults: {d.describe(args.imgsz, used)} (on CUDA: 2000 shapes images, the cfg's imgsz, "
            f"batch {CUDA_DEFAULTS.batch}, {CUDA_DEFAULTS.epochs} epochs; set --data/--imgsz/--batch/--epochs to choose)")


def stride_multiple(imgsz: int, model: Any, verbose: bool = True) -> int:
    """``imgsz`` rounded up to the model's largest stride, with a one-line warning when it changes."""
    stride = max_stride(model)
    rounded = round_imgsz(int(imgsz), stride)
    if rounded != int(imgsz) and verbose:
        print(f"warning: --imgsz {imgsz} is not a multiple of the model's largest stride {stride}; using {rounded}")
    return rounded


def freeze(model: Any, prefixes: list[str]) -> int:
    """Stop gradients for parameters whose names start with any prefix; returns how many were frozen."""
    frozen = 0
    for name, p in model.named_parameters():
        if any(name.startswith(pre) for pre in prefixes):
            p.requires_grad_(False)
            frozen += 1
    return frozen


def apply_freeze(args: argparse.Namespace, model: Any, task: Any, verbose: bool = True) -> None:
    """``--freeze``, with the keys this model accepts named when a pattern matches nothing."""
    patterns = list(getattr(args, "freeze", None) or [])
    if not patterns:
        return
    names = [n for n, _ in model.named_parameters()]
    for key in patterns:
        prefixes = task.parameter_prefixes(model, key)
        if not any(n.startswith(p) for n in names for p in prefixes):
            raise TrainSetupError(f"--freeze {key} matches no parameter; use {valid_prefixes(model, task)}")
    n = freeze(model, [p for key in patterns for p in task.parameter_prefixes(model, key)])
    if verbose:
        print(f"froze {n} parameter tensors ({', '.join(patterns)})")


def check_lr_scale(args: argparse.Namespace, model: Any, task: Any) -> None:
    names = [n for n, _ in model.named_parameters()]
    for entry in getattr(args, "lr_scale", None) or []:
        key = str(entry).partition("=")[0]
        prefixes = task.parameter_prefixes(model, key)
        if not any(n.startswith(p) for n in names for p in prefixes):
            raise TrainSetupError(f"--lr-scale {entry}: '{key}' matches no parameter; use {valid_prefixes(model, task)}")
