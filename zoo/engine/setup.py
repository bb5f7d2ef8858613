"""Setting up a run: device choice, the model + task + data triple, freezing."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import torch

from zoo.engine.ddp import DistInfo, cuda_device_ids
from zoo.engine.tasks.base import task_class
from zoo.builder import head_task
from zoo.checkpoint import read_checkpoint
from zoo.config import resolve_spec
from zoo.data.spec import resolve_data
from zoo.engine.train_options import apply_freeze, stride_multiple
from zoo.errors import TrainSetupError
from zoo.model import Model, checkpoint_config

__all__ = ["TrainSetupError", "select_device", "build_for_task", "plain_args"]




def select_device(spec: str | None, info: DistInfo = DistInfo()) -> torch.device:
    """``cpu``, ``cuda``, ``0``, ``0,1`` (one id per DDP rank) or empty / ``auto`` (CUDA when present)."""
    text = (spec or "").strip().lower()
    try:
        ids = cuda_device_ids(text)
    except ValueError as exc:
        raise TrainSetupError(str(exc)) from None
    if text == "cpu":
        return torch.device("cpu")
    if not ids:  # auto
        return torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainSetupError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    count = torch.cuda.device_count()
    if max(ids) >= count:
        raise TrainSetupError(f"--device {spec}: this machine has {count} CUDA device(s) (ids 0..{count - 1})")
    if info.distributed:
        if len(ids) == 1:
            return torch.device("cuda", info.local_rank % count)
        if len(ids) != info.world:
            raise TrainSetupError(f"--device {spec} names {len(ids)} GPUs but {info.world} processes run")
        return torch.device("cuda", ids[info.local_rank])
    return torch.device("cuda", ids[0])


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The namespace as YAML / weights-only-safe plain values (callables dropped, paths as str)."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if callable(value):
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[key] = value
    return out



def build_for_task(args: argparse.Namespace, verbose: bool = True, partial_weights: bool = True,
                   before_data: Callable[[str], None] | None = None):
    """One pass, each step once: read the config (a YAML, or the one a checkpoint carries), find its
    head's task, resolve the data, build the model with the data's class count, load weights (all
    of ``--weights`` unless ``partial_weights``, which training allows for fine-tuning), make the
    task, apply ``--freeze``. ``before_data(task_name)`` runs once the task is known and before the data
    is resolved (the trainer fills unset sizes for the device there). ``imgsz`` is rounded up to the
    model's largest stride; only then, and only if that changes it, is the data resolved a second time.

    Returns ``(model, task, imgsz)``.
    """
    plugins = tuple(getattr(args, "plugin", None) or ())
    trust = bool(getattr(args, "trust_plugins", False))
    # a resumed run is built from the config its checkpoint carries (plugins it names need the user's
    # say-so), not from a cfg path that was relative to where the run started
    source = str(getattr(args, "resume", None) or args.cfg)
    ckpt = read_checkpoint(source) if source.endswith((".pt", ".pth")) else None
    cfg = checkpoint_config(ckpt, plugins, trust) if ckpt is not None else source
    scale = getattr(args, "scale", None) or (cfg.get("scale") if isinstance(cfg, dict) else None)
    spec = resolve_spec(cfg, scale=scale)
    task_cls = task_class(head_task(spec, plugins), spec.source)
    if before_data is not None:
        before_data(task_cls.name)
    imgsz = int(args.imgsz or spec.cfg.get("imgsz") or task_cls.default_imgsz)
    data = resolve_data(getattr(args, "data", None), task_cls.name, imgsz)
    nc = len(data.names) if spec.nc is not None and data.names and spec.nc != len(data.names) else None
    if nc is not None and ckpt is not None and not partial_weights:
        raise TrainSetupError(f"{source} predicts {spec.nc} classes but the data has {nc}; evaluating would "
                              "score a randomly initialised head: use data with the checkpoint's classes")
    if nc is not None and verbose:
        print(f"{spec.name}: nc {spec.nc} -> {nc} to match the data")
    if ckpt is not None:
        model = Model.from_checkpoint(ckpt, plugins, trust, **({"nc": nc} if nc else {}))
    else:
        model = Model(cfg, scale=scale, nc=nc, plugins=plugins)
    rounded = stride_multiple(imgsz, model, verbose)
    if rounded != imgsz:
        imgsz = rounded
        data = resolve_data(getattr(args, "data", None), task_cls.name, imgsz)  # shapes render at this size
    if data.names:
        model.names = dict(enumerate(data.names))
    if getattr(args, "weights", None):
        report = model.load(str(args.weights), verbose=verbose)
        if not partial_weights:
            report.require_fit("evaluating it would measure random weights; pass weights made for this model")
        elif report.unfit > len(report.loaded):  # fine-tuning a new head is normal; most of the model is not
            print(f"warning: only {len(report.loaded)} of {len(report.loaded) + report.unfit} tensors of "
                  f"{args.weights} fit the model; the rest train from random initial values")
    task = task_cls(args, model, data)
    apply_freeze(args, model, task, verbose=verbose)
    return model, task, imgsz
