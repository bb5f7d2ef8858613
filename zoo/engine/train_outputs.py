"""What a training run writes besides its weights' bytes: checkpoint contents (full while the run can
resume, stripped once it ends), results.csv rows and the epoch line, the first-batch image, the ETA line."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.engine.plotting import draw_boxes, plot_results, save_grid
from zoo.engine.setup import plain_args
from zoo.engine.training_checkpoint import atomic_save, capture_rng, stamp

if TYPE_CHECKING:
    from zoo.engine.trainer import Trainer

__all__ = ["full_checkpoint", "restore_missing_best", "strip_checkpoint", "RESUME_ONLY", "log_epoch", "plot_train_batch", "EtaProbe"]

# what only resuming needs: dropped from best.pt and last.pt when the run ends (as Ultralytics does)
RESUME_ONLY = ("train_state", "optimizer", "schedule", "scaler", "rng")


def full_checkpoint(t: "Trainer") -> dict[str, Any]:
    """Everything an exact resume needs (layout: zoo.engine.training_checkpoint)."""
    model = t.model
    return {
        **stamp(),
        "model_state": {k: v.detach().cpu() for k, v in t.eval_model().state_dict().items()},
        "yaml": dict(model.yaml),
        "scale": model.scale,
        "name": getattr(model, "name", None),
        "task": t.task.name,
        "names": list(t.names),
        "plugins": list(getattr(model, "plugins", ()) or ()),
        "epoch": t.epoch,
        "epochs": int(t.args.epochs),
        "best_fitness": float(t.best_fitness),
        "metrics": {k: float(v) for k, v in t.metrics.items()},
        "args": plain_args(t.args),
        "train_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": None if t.ema is None else {"updates": t.ema.updates, "decay": t.ema.decay, "tau": t.ema.tau},
        "optimizer": t.optimizer.state_dict(),
        "schedule": {"step": (t.epoch + 1) * t.batches_per_epoch},
        "scaler": t.scaler.state_dict() if t.amp else None,
        "rng": capture_rng(),
    }


def interrupted_checkpoint(t: "Trainer") -> dict[str, Any]:
    """The state after the last finished step of an epoch that was stopped part-way: ``epoch`` is the
    last finished epoch, ``partial`` says how far the next one got (steps, loss sums, skipped items)."""
    ckpt = full_checkpoint(t)
    ckpt["epoch"] = t.epoch - 1
    ckpt["partial"] = {"epoch": t.epoch, "step": t.steps_done, "sums": dict(t.epoch_sums),
                       "skipped": t.epoch_skipped}
    return ckpt


def restore_missing_best(t: "Trainer") -> None:
    """On resume: a kill during the first best.pt write loses it, and the restored best fitness would
    stop later epochs from writing it again, so put back the newest weights there are (last.pt)."""
    best = t.weights_dir / "best.pt"
    last = Path(t.args.resume).resolve()
    if best.exists() or not last.is_file() or t.resume_ckpt.get("partial"):
        return  # (a part-way checkpoint is no epoch's result: the first finished epoch writes best.pt)
    atomic_save(t.resume_ckpt, best)
    fitness = (t.resume_ckpt.get("metrics") or {}).get(t.task.fitness_key)
    if fitness is not None:  # later epochs must beat what best.pt now holds, not a lost better one
        t.resume_ckpt["best_fitness"] = float(fitness)
    print(f"best.pt was missing (a write cut short?); restored it from {last.name} "
          f"(epoch {int(t.resume_ckpt['epoch']) + 1})")


def strip_checkpoint(path: Path) -> tuple[int, int] | None:
    """Rewrite a finished run's checkpoint without the resume-only state; returns (bytes before, after)."""
    path = Path(path)
    if not path.is_file():
        return None
    before = path.stat().st_size
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not any(k in ckpt for k in RESUME_ONLY):
        return before, before
    for key in RESUME_ONLY:
        ckpt.pop(key, None)
    ckpt["stripped"] = True  # a finished run: resuming it only says so
    atomic_save(ckpt, path)
    return before, path.stat().st_size


def log_epoch(t: "Trainer", losses: dict[str, float], metrics: dict[str, float], elapsed: float,
              skipped: int) -> None:
    """Append the epoch's row to results.csv, print its line and redraw results.png."""
    row: dict[str, Any] = {"epoch": t.epoch + 1, "time": round(elapsed, 2), "lr": getattr(t, "lr", 0.0)}
    row.update({f"train/{k}": v for k, v in losses.items()})
    row.update(metrics)
    row["skipped"] = skipped
    new_file = not t.csv_path.exists() or t.csv_path.stat().st_size == 0
    with open(t.csv_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row), extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    parts = [f"epoch {t.epoch + 1}/{t.args.epochs}"]
    parts.append(" ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    shown = {k: v for k, v in metrics.items() if not k.startswith("val/")}
    if shown:
        parts.append(" ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    parts.append(f"lr {row['lr']:.3g}  {elapsed:.1f}s")
    if skipped:
        parts.append(f"skipped {skipped} ({t.train_set.source.problems.summary() or 'unreadable images'})")
    print("  ".join(parts), flush=True)
    if getattr(t.args, "plots", True):
        try:
            plot_results(t.csv_path, t.save_dir / "results.png")
        except Exception as exc:  # a plot must never stop training
            print(f"warning: results.png not written ({type(exc).__name__}: {exc})")


def plot_train_batch(t: "Trainer", batch: dict) -> None:
    try:
        images = []
        for i in range(min(len(batch["img"]), 8)):
            img = batch["img"][i].permute(1, 2, 0).numpy()
            if "boxes" in batch:
                sel = batch["batch_idx"] == i
                img = draw_boxes(img, batch["boxes"][sel].numpy(), batch["cls"][sel].numpy(), t.names)
            images.append(img)
        save_grid(images, t.save_dir / "train_batch.jpg")
    except Exception as exc:
        print(f"warning: train_batch.jpg not written ({type(exc).__name__}: {exc})")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class EtaProbe:
    """Times steps early in this process's first epoch and prints one line: the defaults the device
    chose (if any) and the estimated training time per epoch and in total. Validation is not in that
    first figure (an untrained detector's many low-score boxes make its cost vary widely), so
    :meth:`first_epoch_done` prints a second estimate once the first epoch has been validated."""

    # The first steps of a CPU run are several times slower than the rest (worker processes starting
    # beside the training threads, first allocations): timing them made a SAM epoch of 66 s look like
    # 11 minutes (10.8 s against 1.1 s a step). So WARMUP steps are left out and the STEPS after them
    # timed (fewer of each in short epochs).
    WARMUP, STEPS = 5, 5

    def __init__(self, note: str, batches: int, epochs_left: int) -> None:
        self.note, self.batches, self.epochs_left = note, batches, epochs_left
        self.epoch_start = time.perf_counter()
        self.start = self.epoch_start
        self.begin: int | None = None  # the first step this process runs (a resumed epoch starts part-way)
        self.done = False
        self.revised = False

    def step(self, i: int) -> None:
        """Call after step ``i`` (0-based) of the first epoch."""
        if self.done:
            return
        now = time.perf_counter()
        self.begin = i if self.begin is None else self.begin
        k, steps = i - self.begin, self.batches - self.begin  # steps run before this one, steps to run
        first = min(self.WARMUP, max(0, steps - 2))  # the timing starts when step `first` ends
        if k == first:
            self.start = now
            if steps > 1:
                return
        if steps > 1 and k < min(first + self.STEPS, steps - 1):
            return
        timed = max(1, k - first)
        per_step = (now - self.start) / timed if steps > 1 else now - self.epoch_start
        epoch = per_step * self.batches
        then = "; the estimate with validation follows epoch 1" if self.epochs_left > 1 else ""
        eta = (f"ETA for training ~{_duration(epoch)}/epoch, ~{_duration(epoch * self.epochs_left)} for "
               f"{self.epochs_left} epoch(s), validation not included{then} ({timed} timed step(s) of "
               f"{per_step:.2f}s)")
        print(f"{self.note}; {eta}" if self.note else eta, flush=True)
        self.done = True

    def first_epoch_done(self, train_s: float, val_s: float) -> None:
        """Call after the first epoch of this process (trained and validated): prints the time left,
        validation included, for the epochs after it."""
        if self.revised:
            return
        self.revised = True
        left = self.epochs_left - 1
        if left < 1:
            return
        total = train_s + val_s
        print(f"epoch 1 took {_duration(total)} (training {_duration(train_s)}, validation {_duration(val_s)}); "
              f"ETA ~{_duration(total * left)} for the other {left} epoch(s), validation included", flush=True)
