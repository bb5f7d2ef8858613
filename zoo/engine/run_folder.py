"""A training run's folder: claimed once, locked while a process writes to it, and repaired on
resume after a kill (stale temporary checkpoint files, results rows of epochs that will be redone).

The lock is an advisory ``flock`` on ``RUN/.lock``: the kernel drops it when the process dies (even
by ``kill -9``), so a crashed run never leaves its folder locked.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are still numbered atomically
    fcntl = None  # type: ignore[assignment]

from zoo.errors import ZooError

__all__ = ["RunFolderError", "numbered", "increment_path", "claim_run_folder", "RunLock",
           "remove_stale_temporaries", "trim_results", "PLUGINS_DIR", "copy_plugins"]

LOCK_NAME = ".lock"
TEMP_GLOB = ".*.pt.*.tmp"  # what zoo.engine.training_checkpoint.atomic_save writes before its rename
PLUGINS_DIR = "plugins"  # RUN/plugins: copies of the plugin files the run used


class RunFolderError(ZooError):
    """The run folder cannot be used (another process holds it)."""


def numbered(path: Path, n: int) -> Path:
    """``train`` -> ``train2``; a name ending in a digit gets a dash so ``c1`` -> ``c1-2``, not ``c12``."""
    sep = "-" if path.name[-1:].isdigit() else ""
    return path.with_name(f"{path.name}{sep}{n}")


def increment_path(path: Path, exist_ok: bool) -> Path:
    """``path`` itself if free (or ``exist_ok``), else the first free ``numbered(path, n)``, n >= 2."""
    if exist_ok or not path.exists():
        return path
    n = 2
    while numbered(path, n).exists():
        n += 1
    return numbered(path, n)


def claim_run_folder(path: Path, exist_ok: bool) -> Path:
    """Create the run folder. Without ``exist_ok`` the name is taken with an atomic ``mkdir``, so two
    runs started together get two folders instead of sharing the first free number."""
    if exist_ok:
        path.mkdir(parents=True, exist_ok=True)
        return path
    n = 1
    while True:
        candidate = path if n == 1 else numbered(path, n)
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1


class RunLock:
    """Exclusive hold on a run folder for one process; a second one fails with one line."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self) -> "RunLock":
        fh = open(self.path, "a+")
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise RunFolderError(
                    f"{self.path.parent} is in use by another zoo run ({holder}); wait for it to finish, "
                    "or give another --name (or drop --exist-ok)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None


def remove_stale_temporaries(weights_dir: Path) -> list[Path]:
    """Delete checkpoint temporaries a killed run left behind (only call while holding the lock:
    then no other process can be writing one)."""
    stale = sorted(Path(weights_dir).glob(TEMP_GLOB))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def trim_results(csv_path: Path, epochs_done: int) -> int:
    """Drop rows of ``results.csv`` for epochs after ``epochs_done`` (1-based): a run killed after
    logging an epoch but before its checkpoint redoes that epoch on resume. Returns rows dropped."""
    if not csv_path.is_file():
        return 0
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = list(reader)
    keep = [r for r in rows if _epoch(r) is not None and _epoch(r) <= epochs_done]  # type: ignore[operator]
    if len(keep) == len(rows):
        return 0
    tmp = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
    os.replace(tmp, csv_path)
    return len(rows) - len(keep)


def _epoch(row: dict[str, str]) -> int | None:
    try:
        return int(row.get("epoch") or "")
    except ValueError:
        return None


def copy_plugins(specs: list[str], cfg_dir: Path | None, run_dir: Path) -> list[Path]:
    """Copy the run's plugin files into ``RUN/plugins`` so its checkpoints can be used from any folder
    (``--trust-plugins`` looks there; importing them stays the user's choice). Module-name plugins
    are installed code and are not copied. A file is looked up as given, then beside the cfg."""
    copied = []
    for spec in specs:
        if not spec.endswith(".py"):
            continue
        path = Path(spec)
        if not path.is_file() and cfg_dir is not None and (cfg_dir / spec).is_file():
            path = cfg_dir / spec
        if path.is_file():
            target = Path(run_dir) / PLUGINS_DIR / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(target)
    return copied
