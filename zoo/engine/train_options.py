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
from typing import Any, Callable, Sequence

from zoo.errors import TrainSetupError

__all__ = ["install_key_value", "document_defaults", "rewrite_key_value", "SizeDefaults", "size_defaults",
           "cpu_default_notes", "FilledDefaults", "within_budget", "shapes_data", "SAM_PROMPT_MIX",
           "check_numbers", "round_imgsz", "valid_prefixes", "fill_size_defaults", "stride_multiple", "freeze", "apply_freeze", "BAD_KEY_VALUE"]

BAD_KEY_VALUE = "bad_key_value"  # dest holding key=value tokens whose key names no option
_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)=(.*)$", re.S)
# Ultralytics names -> ours ("model" is the positional cfg)
ALIASES = {"model": "cfg", "cfg": "cfg", "lr0": "lr"}
TRUE, FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


SAM_PROMPT_MIX = "0.5,0.25,0.25"  # box, point, points: the prompt mix of SAM's own training


@dataclass(frozen=True)
class SizeDefaults:
    """What an option left unset means on a device: images in the embedded shapes set, size, batch,
    epochs, and on CPU the lr (Adam / AdamW), SAM's prompt mix and a compute budget."""
    n_train: int | None  # None: the shapes set's own default
    n_val: int | None
    imgsz: int | None  # None: the cfg's imgsz or the task's default
    batch: int
    epochs: int
    lr: float | None = None  # None: the optimizer's usual default (0.001 AdamW / Adam)
    prompt_mix: str = SAM_PROMPT_MIX
    # forward GFLOPs (per image x images x epochs) the default run may spend; a heavier model than the one
    # these sizes were measured with trains on fewer images (then fewer epochs) to stay within it
    gflops_budget: float | None = None

    def describe(self, imgsz: int, used: Sequence[str], sizes: tuple[int, int, int] | None = None) -> str:
        """The options in ``used`` as text; ``sizes``: (train images, val images, epochs) if not the table's."""
        n_train, n_val, epochs = sizes or (self.n_train, self.n_val, self.epochs)
        parts = {"data": lambda: f"{n_train}/{n_val} shapes images (train/val)",
                 "imgsz": lambda: f"imgsz {imgsz}", "batch": lambda: f"batch {self.batch}",
                 "epochs": lambda: f"{epochs} epochs", "lr": lambda: f"lr {self.lr:g}",
                 "sam_prompt_mix": lambda: f"box prompts only (--sam-prompt-mix {self.prompt_mix})"}
        return ", ".join(parts[k]() for k in parts if k in used)


# On CUDA: what zoo train has always used. On CPU: a run of about ten minutes on two cores that learns
# something visible; measured on a 2-core EPYC with the models named below (validation of these val
# sets takes seconds; training is what costs).
CUDA_DEFAULTS = SizeDefaults(None, None, None, 16, 10)
CPU_DEFAULTS = {
    # yolov10n (0.34 GFLOPs at 128): 128 px beat 96 px at equal compute; AdamW lr 0.003 beat 0.001 and
    # 0.005 (mAP50 0.28 vs 0.21 and 0.23 after 800 images x 6 epochs)
    "detect": SizeDefaults(1200, 64, 128, 16, 6, lr=0.003, gflops_budget=2500.0),
    # mobilevit-xxs-cls (0.042 GFLOPs at 64): top-1 0.52 after 3000 x 6 at batch 32, lr 0.003; 0.42 after
    # 1500 x 5 at lr 0.001; 0.28 (chance 0.2) with the old 256 x 3 at 96 px
    "classify": SizeDefaults(3000, 200, 64, 32, 6, lr=0.003, gflops_budget=800.0),
    # sam-tinyvit from random weights (the encoder is ~85 % of a step): box prompts alone gave mIoU/box
    # 0.43 after 200 steps of 8 images at 128 px, SAM's mix of box / point prompts 0.03
    "segment": SizeDefaults(480, 16, 128, 8, 5, prompt_mix="1,0,0"),
}
CPU_FALLBACK = SizeDefaults(128, 32, None, 8, 2)
ADAM_FAMILY = ("adam", "adamw")  # the CPU lr suits these; SGD keeps its own default


def size_defaults(task: str, cuda: bool) -> SizeDefaults:
    return CUDA_DEFAULTS if cuda else CPU_DEFAULTS.get(task, CPU_FALLBACK)


@dataclass(frozen=True)
class FilledDefaults:
    """Which options :func:`fill_size_defaults` filled, from which table row, on which device."""
    defaults: SizeDefaults
    used: tuple[str, ...]
    cuda: bool

    def note(self, imgsz: int, sizes: tuple[int, int, int] | None = None, why: str = "") -> str:
        """One line on the CPU defaults used ("" on CUDA or when every option was given)."""
        if self.cuda or not self.used:
            return ""
        return (f"CPU defaults: {self.defaults.describe(imgsz, self.used, sizes)}{why} (on CUDA: 2000 "
                f"shapes images, the cfg's or task's imgsz, batch {CUDA_DEFAULTS.batch}, "
                f"{CUDA_DEFAULTS.epochs} epochs{', lr 0.001' if 'lr' in self.used else ''}"
                f"{', all prompt types' if 'sam_prompt_mix' in self.used else ''}; set "
                + "/".join("--" + k.replace("_", "-") for k in self.used) + " to choose)")

    @property
    def budget(self) -> float | None:
        """The GFLOPs budget when it applies: on CPU, with the shapes set's size left to the defaults."""
        ok = not self.cuda and "data" in self.used and self.defaults.n_train
        return self.defaults.gflops_budget if ok else None


def within_budget(d: SizeDefaults, gflops: float, batch: int, epochs_free: bool) -> tuple[int, int, int]:
    """(train images, val images, epochs) for a model of ``gflops`` forward GFLOPs per image: ``d``'s sizes
    when they fit ``d.gflops_budget``, else fewer images (whole batches, at least 4 steps an epoch; the val
    set shrinks alike, to no fewer than 32) and, if ``epochs_free`` (the epochs are the defaults' too) and
    4 steps an epoch still cost too much, fewer epochs. The images follow ``d.epochs`` even when the user
    chose other epochs: more epochs asked for is a longer run, not a smaller data set."""
    n_train, n_val, epochs = int(d.n_train or 0), int(d.n_val or 0), int(d.epochs)
    if d.gflops_budget is None or gflops <= 0 or gflops * n_train * epochs <= d.gflops_budget:
        return n_train, n_val, epochs
    fewest = min(n_train, 4 * batch)
    images = int(d.gflops_budget / (gflops * epochs)) // batch * batch
    if images < fewest:
        images = fewest
        if epochs_free:
            epochs = max(1, int(d.gflops_budget / (gflops * fewest)))
    return images, max(min(n_val, 32), round(n_val * images / n_train)), epochs


def cpu_default_notes() -> dict[str, str]:
    """``zoo train --help`` text for the options whose default follows the device (from the tables above)."""
    names = {"detect": "detect", "classify": "classify", "segment": "SAM"}

    def per_task(show: Callable[[SizeDefaults], str | None]) -> str:
        shown = [f"{show(d)} {names.get(task, task)}" for task, d in CPU_DEFAULTS.items() if show(d) is not None]
        return ", ".join(shown)

    budget = "; fewer images (then epochs) for a model heavier than the budget of " + per_task(
        lambda d: f"{d.gflops_budget:g} GFLOPs" if d.gflops_budget else None) + " (forward GFLOPs x images x epochs)"
    return {
        "data": "shapes: 2000/200 train/val images on CUDA; on CPU " + per_task(lambda d: f"{d.n_train}/{d.n_val}")
                + f", {CPU_FALLBACK.n_train}/{CPU_FALLBACK.n_val} other tasks" + budget,
        "imgsz": "the cfg's imgsz, else 320 detect / 224 classify / 256 SAM; on CPU "
                 + per_task(lambda d: str(d.imgsz) if d.imgsz else None) + ", the same for other tasks",
        "batch": f"CUDA {CUDA_DEFAULTS.batch}; CPU " + per_task(lambda d: str(d.batch))
                 + f", {CPU_FALLBACK.batch} other tasks",
        "epochs": f"CUDA {CUDA_DEFAULTS.epochs}; CPU " + per_task(lambda d: str(d.epochs))
                  + f", {CPU_FALLBACK.epochs} other tasks",
        "lr": "0.01 SGD; 0.001 AdamW / Adam, on CPU " + per_task(lambda d: f"{d.lr:g}" if d.lr else None)
              + " for models within the budget",
        "sam_prompt_mix": f"{SAM_PROMPT_MIX}; on CPU " + per_task(
            lambda d: d.prompt_mix if d.prompt_mix != SAM_PROMPT_MIX else None) + " (box prompts only)",
    }


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
            if isinstance(action, argparse._StoreTrueAction):
                text += " (default: off)"
            elif isinstance(action, argparse.BooleanOptionalAction) or not (
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


def fill_size_defaults(args: argparse.Namespace, task: str, cuda: bool) -> FilledDefaults:
    """Fill the options left unset for this device and task (sizes; on CPU also the Adam / AdamW lr and
    SAM's prompt mix), before the data is resolved (the shapes set renders at the input size)."""
    d = size_defaults(task, cuda)
    used: list[str] = []
    if getattr(args, "data", None) is None and d.n_train:
        args.data = shapes_data(d.n_train, d.n_val)
        used.append("data")
    if getattr(args, "imgsz", None) is None and d.imgsz is not None:
        args.imgsz = d.imgsz
        used.append("imgsz")
    for name, value in (("batch", d.batch), ("epochs", d.epochs)):
        if getattr(args, name, None) is None:
            setattr(args, name, value)
            used.append(name)
    adam = str(getattr(args, "optimizer", "AdamW")).lower() in ADAM_FAMILY
    if getattr(args, "lr", None) is None and d.lr is not None and adam:
        args.lr = d.lr
        used.append("lr")
    if getattr(args, "sam_prompt_mix", None) is None:
        args.sam_prompt_mix = d.prompt_mix
        if task == "segment" and d.prompt_mix != SAM_PROMPT_MIX:
            used.append("sam_prompt_mix")
    return FilledDefaults(d, tuple(used), cuda)


def shapes_data(n_train: int | None, n_val: int | None) -> str:
    return f"shapes:n_train={n_train},n_val={n_val}"


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
