"""Training checkpoints: plain types and tensors only (``torch.load(weights_only=True)`` reads them),
written atomically, plus capture / restore of every random number generator.

Layout of ``weights/last.pt`` and ``weights/best.pt``::

    format        "zoo-train/1"
    model_state   state dict the run evaluates with (the EMA weights when EMA is on)
    yaml          the model config dict (``Model.yaml``), with its chosen ``scale``
    scale, name, task, names, plugins
    epoch         last completed epoch (0-based); ``epochs`` the planned total
    best_fitness, metrics   the validation results of that epoch
    args          the run's arguments (plain dict)
    train_state   the raw (non-EMA) model weights, for resuming
    ema           {"updates", "decay", "tau"} or None
    optimizer     optimizer.state_dict();  schedule {"step": global iteration}
    scaler        AMP GradScaler state or None
    rng           {"torch", "numpy", "python", "cuda"} generator states
    date, version
"""
from __future__ import annotations

import os
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import CheckpointError
from zoo.version import __version__

__all__ = ["atomic_save", "capture_rng", "restore_rng", "load_training_checkpoint", "FORMAT"]

FORMAT = "zoo-train/1"


# Tests make a kill land inside a checkpoint write: ZOO_STALL_SAVE="best.pt:1" makes the first write
# of best.pt stop before its rename, touch "<tmp>.stalled" and wait to be killed
STALL_ENV = "ZOO_STALL_SAVE"
_writes: dict[str, int] = {}


def _maybe_stall(path: Path, tmp: Path) -> None:
    name, _, nth = os.environ.get(STALL_ENV, "").partition(":")
    if name != path.name:
        return
    _writes[name] = _writes.get(name, 0) + 1
    if _writes[name] == int(nth or 1):
        Path(f"{tmp}.stalled").touch()
        time.sleep(600)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``: a crash
    mid-write leaves the previous file intact (and a temporary that the next run removes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _maybe_stall(path, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def capture_rng() -> dict[str, Any]:
    """States of torch (CPU and CUDA), numpy's global generator and Python's ``random`` as tensors/ints."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))


def stamp() -> dict[str, str]:
    return {"format": FORMAT, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "version": __version__}


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by the trainer (weights only, no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable zoo training checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a zoo training checkpoint (no format '{FORMAT}'); "
                              "use --weights to start from other weights")
    return ckpt
