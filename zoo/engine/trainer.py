"""The training loop shared by every task.

The trainer owns everything task-independent: devices and DDP, seeding, the run folder, optimizer,
warm-up + decay schedule, EMA, AMP, gradient clipping, checkpoints (atomic, resumable), the
results table and plots. What differs per task (datasets, loss, validation, prediction images)
comes from a :class:`zoo.engine.tasks.base.Task` chosen by the model's head.

Run folder (``runs/<task>/<name>``, numbered ``name2``, ``name3``... unless ``exist_ok``)::

    args.yaml  results.csv  results.png  train_batch.jpg  val_predictions.jpg
    weights/last.pt  weights/best.pt      (layout: zoo.engine.training_checkpoint; once the run ends
                                          both lose the resume-only state: zoo.engine.train_outputs)
"""
from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import yaml
from tqdm import tqdm

from zoo.data.dataset import build_dataloader
from zoo.engine import ddp
from zoo.engine.training_checkpoint import atomic_save, load_training_checkpoint, restore_rng
from zoo.engine.ema import ModelEMA
from zoo.engine.optim import LRSchedule, build_optimizer
from zoo.engine.run_folder import RunLock, claim_run_folder, copy_plugins, remove_stale_temporaries, trim_results
from zoo.engine.interruption import StopRequests
from zoo.engine.setup import build_for_task, plain_args, select_device
from zoo.engine.cpu_budget import fit_cpu_budget
from zoo.engine.train_options import SAM_PROMPT_MIX, FilledDefaults, check_lr_scale, fill_size_defaults
from zoo.engine.train_outputs import (EtaProbe, full_checkpoint, interrupted_checkpoint, log_epoch, plot_train_batch,
                                      restore_missing_best, strip_checkpoint)
from zoo.errors import TrainingInterrupted, TrainSetupError

__all__ = ["Trainer", "TrainResult", "seed_everything"]

Callback = Callable[["Trainer"], None]
# taken from the new command line; plugins too, since a checkpoint is data and must not choose code to import
RESUME_KEEPS = ("device", "workers", "nproc", "resume", "exist_ok", "plugin", "trust_plugins")


@dataclass
class TrainResult:
    status: str  # "done" or "diverged"
    save_dir: Path
    epochs_done: int
    best_fitness: float
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class Trainer:
    """``Trainer(args).train()``; ``args`` is the namespace of ``zoo train`` (see zoo.commands.train).

    ``callbacks`` maps ``"on_train_start"``, ``"on_epoch_end"``, ``"on_train_end"`` to functions of the
    trainer, called on rank 0 after the epoch's checkpoint is written.
    """

    def __init__(self, args: argparse.Namespace, callbacks: dict[str, list[Callback]] | None = None) -> None:
        self.args = args
        self.callbacks = callbacks or {}
        self.info = ddp.dist_info()
        self.resume_ckpt: dict[str, Any] | None = None
        if getattr(args, "resume", None):
            self.resume_ckpt = load_training_checkpoint(Path(args.resume))
            saved = dict(self.resume_ckpt["args"])
            for key in RESUME_KEEPS:
                saved[key] = getattr(args, key, saved.get(key))
            self.args = args = argparse.Namespace(**{**vars(args), **saved})
        self.device = select_device(args.device, self.info)
        ddp.init_distributed(self.info, self.device)
        # Every rank uses the same seed: identical initial weights (DDP also broadcasts rank 0's).
        seed_everything(int(args.seed), bool(getattr(args, "deterministic", False)))

        filled: list[FilledDefaults] = []

        def sizes(task: str) -> None:  # unset sizes follow the device; a resumed run keeps its own
            if self.resume_ckpt is None:
                filled.append(fill_size_defaults(args, task, self.device.type == "cuda"))
            elif getattr(args, "sam_prompt_mix", None) is None:  # saved before the option existed
                args.sam_prompt_mix = SAM_PROMPT_MIX

        self.model, self.task, self.imgsz = build_for_task(args, verbose=self.info.main, before_data=sizes)
        self.size_note = fit_cpu_budget(args, filled[0] if filled else None, self.model, self.task, self.imgsz)
        args.imgsz = self.imgsz
        check_lr_scale(args, self.model, self.task)
        self.names: list[str] = list(self.task.names)
        if self.resume_ckpt is not None:
            self.save_dir = Path(args.resume).resolve().parent.parent
        else:  # the folder is claimed (numbered if taken) when the run starts, in _setup
            project = Path(args.project) if args.project else Path("runs") / self.task.name
            self.save_dir = project / (args.name or "train")
        self.lock: RunLock | None = None
        self.epoch = 0
        # progress inside the current epoch (restored from an interrupted checkpoint on resume)
        self.steps_done, self.epoch_sums, self.epoch_skipped = 0, {}, 0
        self.stops = StopRequests()
        self.best_fitness = -math.inf
        self.metrics: dict[str, float] = {}

    @property
    def weights_dir(self) -> Path:
        return self.save_dir / "weights"

    @property
    def csv_path(self) -> Path:
        return self.save_dir / "results.csv"

    # ------------------------------------------------------------------ setup
    def _claim_folder(self) -> None:
        """Take the run folder for this process (rank 0): claim a fresh one or lock the resumed one,
        then undo what a kill may have left half-done there."""
        if self.resume_ckpt is None:
            self.save_dir = claim_run_folder(self.save_dir, bool(self.args.exist_ok))
        self.lock = RunLock(self.save_dir).acquire()
        if self.resume_ckpt is None:  # so the run's checkpoints work from any folder (RUN/plugins)
            source = Path(str(self.model.source))
            copy_plugins(list(self.model.plugins) + list(self.model.yaml.get("plugins") or []),
                         source.parent if source.is_file() else None, self.save_dir)
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temporaries(self.weights_dir)
        if stale:
            print(f"removed {len(stale)} unfinished checkpoint write(s) left by a killed run: "
                  + ", ".join(p.name for p in stale))
        if self.resume_ckpt is not None:
            dropped = trim_results(self.csv_path, int(self.resume_ckpt["epoch"]) + 1)
            if dropped:
                print(f"results.csv: dropped {dropped} row(s) of epochs after the checkpoint (they run again)")
            restore_missing_best(self)

    def _setup(self) -> None:
        args, info = self.args, self.info
        if info.main:
            self._claim_folder()
            (self.save_dir / "args.yaml").write_text(yaml.safe_dump(plain_args(args), sort_keys=False))
        self.model.to(self.device)
        if getattr(args, "channels_last", False):  # before the optimizer and EMA see the parameters
            self.model.to_channels_last()
        self.train_set = self.task.build_dataset("train", self.imgsz, augment=True)
        per_rank_batch = max(1, int(args.batch) // info.world)
        self.train_loader = build_dataloader(
            self.train_set, per_rank_batch, self.task.collate, shuffle=True, workers=int(args.workers),
            seed=int(args.seed), rank=info.rank, world=info.world, pin_memory=self.device.type == "cuda")
        self.val_loader = None
        if info.main and getattr(args, "val", True):
            val_set = self.task.build_dataset("val", self.imgsz, augment=False)
            self.val_loader = build_dataloader(val_set, max(1, int(args.batch)), self.task.collate, shuffle=False,
                                               workers=int(args.workers), seed=int(args.seed))
        self.loss_fn = self.task.build_loss(self.model).to(self.device)

        opt_name = args.optimizer
        lr = args.lr if args.lr is not None else (0.01 if opt_name.lower() == "sgd" else 0.001)
        wd = args.weight_decay if args.weight_decay is not None else (5e-4 if opt_name.lower() == "sgd" else 0.01)
        self.optimizer = build_optimizer(self.model, opt_name, lr, args.momentum, wd, self._lr_scales())
        self.batches_per_epoch = len(self.train_loader)
        warmup_bias = args.warmup_bias_lr
        if warmup_bias is None:  # a high bias lr suits SGD's warm-up; Adam's per-weight steps need none
            warmup_bias = 0.1 if opt_name.lower() == "sgd" else 0.0
        self.schedule = LRSchedule(lr=lr, total=int(args.epochs) * self.batches_per_epoch,
                                   warmup=round(float(args.warmup_epochs) * self.batches_per_epoch), lrf=args.lrf,
                                   kind=args.schedule, warmup_bias_lr=warmup_bias, momentum=args.momentum)
        self.ema = ModelEMA(self.model, decay=args.ema_decay) if args.ema else None
        self.amp = bool(args.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if self.resume_ckpt is not None:
            self._load_resume_state(self.resume_ckpt)
        self.train_model: nn.Module = self.model
        if info.distributed:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(args.find_unused_parameters))

    def _lr_scales(self) -> dict[str, float]:
        scales: dict[str, float] = {}
        for entry in getattr(self.args, "lr_scale", None) or []:
            key, _, value = str(entry).partition("=")
            for prefix in self.task.parameter_prefixes(self.model, key):
                scales[prefix] = float(value)
        return scales

    def _load_resume_state(self, ckpt: dict[str, Any]) -> None:
        if "train_state" not in ckpt:  # stripped when its run ended: there is nothing left to resume
            if int(ckpt["epoch"]) + 1 < int(self.args.epochs):
                raise TrainSetupError(f"{self.args.resume} holds weights only (no optimizer state); "
                                      f"start a new run with --weights {self.args.resume}")
            self.epoch, self.best_fitness = int(ckpt["epoch"]) + 1, float(ckpt.get("best_fitness", -math.inf))
            return
        self.model.load_state_dict(ckpt["train_state"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.ema.load_state_dict(ckpt["model_state"])
            self.ema.updates = int(ckpt["ema"]["updates"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and self.amp:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"]) + 1
        self.best_fitness = float(ckpt.get("best_fitness", -math.inf))
        partial = ckpt.get("partial")
        if partial:  # stopped part-way through this epoch
            self.steps_done, self.epoch_skipped = int(partial["step"]), int(partial["skipped"])
            self.epoch_sums = {k: float(v) for k, v in partial["sums"].items()}
        if self.info.main and self.epoch < int(self.args.epochs):
            at = f", step {self.steps_done + 1}" if partial else ""
            print(f"Resuming {self.save_dir} from epoch {self.epoch + 1}/{self.args.epochs}{at}")

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        try:
            with self.stops:
                return self._train()
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupted()) from None
        finally:
            if self.lock is not None:
                self.lock.release()

    def _interrupted(self) -> str:
        """Save where the run stopped (rank 0, after at least one step of this epoch) and say how to go on."""
        last = self.weights_dir / "last.pt"
        saved = ""
        if self.info.main and not self.info.distributed and self.steps_done > 0:
            atomic_save(interrupted_checkpoint(self), last)
            saved = f" after step {self.steps_done}/{self.batches_per_epoch}"
        if self.info.main and last.is_file():
            return f"interrupted in epoch {self.epoch + 1}{saved}; resume with: zoo train --resume {last}"
        return f"interrupted in epoch {self.epoch + 1}, before the first checkpoint; nothing to resume"

    def _train(self) -> TrainResult:
        self._setup()
        args, info = self.args, self.info
        epochs = int(args.epochs)
        if self.resume_ckpt is not None:
            if "rng" in self.resume_ckpt:  # last: building the pieces above drew random numbers
                restore_rng(self.resume_ckpt["rng"])
            if self.epoch >= epochs:
                return TrainResult("done", self.save_dir, epochs, self.best_fitness, self.metrics,
                                   f"{self.save_dir} already finished its {epochs} epochs: nothing to resume "
                                   f"(to train longer, start a new run with --weights {self.weights_dir / 'last.pt'})")
        if info.main:
            print(self._banner())
            self.eta = EtaProbe(self.size_note, self.batches_per_epoch, epochs - self.epoch)
        self._run_callbacks("on_train_start")
        scan_skipped = self.train_set.source.problems.total
        while self.epoch < epochs:
            t0, whole = time.time(), self.steps_done == 0  # (a resumed part of an epoch times no epoch)
            means, skipped, diverged = self._train_epoch(epochs)
            if diverged:
                return self._diverged(diverged)
            trained = time.time() - t0
            self.metrics = self._validate() if info.main else {}
            if info.main:
                fitness = self.metrics.get(self.task.fitness_key, -sum(means.values()))
                is_best = fitness > self.best_fitness
                self.best_fitness = max(self.best_fitness, fitness)
                elapsed = time.time() - t0
                log_epoch(self, means, self.metrics, elapsed, skipped + scan_skipped)
                if whole:
                    self.eta.first_epoch_done(trained, elapsed - trained)
                self._save(is_best)
                if info.distributed:
                    print(ddp.check_replicas(self.model))
            elif info.distributed:
                ddp.check_replicas(self.model)
            if info.main:
                self._run_callbacks("on_epoch_end")
            self.epoch += 1
            self.steps_done, self.epoch_sums, self.epoch_skipped = 0, {}, 0
        if info.main:
            self._final_outputs()
            self._strip_weights()
            self._run_callbacks("on_train_end")
        return TrainResult("done", self.save_dir, epochs, self.best_fitness, self.metrics,
                           f"{epochs} epochs done; results in {self.save_dir}")

    def _train_epoch(self, epochs: int) -> tuple[dict[str, float], int, str]:
        args, info = self.args, self.info
        # an epoch resumed part-way skips the steps it already took (each sample's seed is fixed)
        start, sums, skipped = self.steps_done, dict(self.epoch_sums), self.epoch_skipped
        self.train_loader.sampler.set_epoch(self.epoch, skip=start * self.train_loader.batch_size)
        self.train_model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        bar = tqdm(self.train_loader, desc=f"{self.epoch + 1}/{epochs}", disable=not info.main or not args.progress,
                   leave=False, dynamic_ncols=True)
        self.stops.between_steps = True
        for i, batch in enumerate(bar, start=start):
            step = self.epoch * self.batches_per_epoch + i
            lr = self.schedule.apply(self.optimizer, step)
            skipped += int(batch.get("bad", 0))
            if self.epoch == 0 and i == 0 and info.main and getattr(args, "plots", True):
                plot_train_batch(self, batch)
            batch = self.task.preprocess(batch, self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                preds = self.train_model(batch["img"], **self.task.train_inputs(batch))
                loss, items = self.loss_fn(preds, batch)
            bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=self.device)
            if info.distributed:
                torch.distributed.all_reduce(bad)
            if bad.item() > 0:
                return {}, skipped, f"non-finite loss ({loss.item()}) at epoch {self.epoch + 1}, batch {i + 1}"
            self.scaler.scale(loss).backward()
            if args.clip_grad and args.clip_grad > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, float(args.clip_grad))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model)
            for k, v in items.items():
                sums[k] = sums.get(k, 0.0) + v
            self.lr = lr
            self.steps_done, self.epoch_sums, self.epoch_skipped = i + 1, dict(sums), skipped
            if info.main:
                self.eta.step(i)
                bar.set_postfix_str(" ".join(f"{k} {v / (i + 1):.3f}" for k, v in sums.items()) + f" lr {lr:.2e}")
            self.stops.check()
        self.stops.between_steps = False
        n = max(1, self.batches_per_epoch)
        if info.distributed and sums:  # report the mean over all ranks, not rank 0's share
            totals = torch.tensor(list(sums.values()) + [float(skipped)], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(totals)
            sums = dict(zip(sums, (totals[:-1] / info.world).tolist()))
            skipped = int(totals[-1].item())
        return {k: v / n for k, v in sums.items()}, skipped, ""

    def eval_model(self) -> nn.Module:
        return self.ema.ema if self.ema is not None else self.model

    def _validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        return self.task.validate(self.eval_model(), self.val_loader, self.device, self.loss_fn,
                                  progress=bool(self.args.progress))

    def _diverged(self, reason: str) -> TrainResult:
        last = self.weights_dir / "last.pt"
        kept = (f"the last good checkpoint is {last} (epoch {self.epoch})" if last.exists()
                else "no checkpoint was written before it")
        message = f"stopped: {reason}; {kept}. Try a lower --lr or more --warmup-epochs."
        if self.info.main:
            print(message)
        return TrainResult("diverged", self.save_dir, self.epoch, self.best_fitness, self.metrics, message)

    # ------------------------------------------------------------------ outputs
    def _banner(self) -> str:
        m = self.model
        params = sum(p.numel() for p in m.parameters())
        return (f"{self.task.name}: {getattr(m, 'name', 'model')} ({params / 1e6:.2f}M params) on {self.device}"
                f"{f' x{self.info.world}' if self.info.distributed else ''}, data {self.task.spec.where} "
                f"({len(self.train_set)} train images, {len(self.names)} classes), imgsz {self.imgsz}, "
                f"batch {self.args.batch}, {self.args.epochs} epochs -> {self.save_dir}")

    def checkpoint(self) -> dict[str, Any]:
        return full_checkpoint(self)

    def _save(self, is_best: bool) -> None:
        ckpt = self.checkpoint()
        atomic_save(ckpt, self.weights_dir / "last.pt")
        if is_best:
            atomic_save(ckpt, self.weights_dir / "best.pt")

    def _final_outputs(self) -> None:
        if not getattr(self.args, "plots", True) or self.val_loader is None:
            return
        best = self.weights_dir / "best.pt"
        model = self.eval_model()
        if best.exists():
            model.load_state_dict(torch.load(best, map_location=self.device, weights_only=True)["model_state"])
        batch = next(iter(self.val_loader))
        path = self.task.plot_predictions(model, batch, self.save_dir / "val_predictions.jpg")
        print(f"prediction images: {path}")

    def _strip_weights(self) -> None:
        """The run is over: best.pt and last.pt keep what using the weights needs, not optimizer state."""
        sizes = [strip_checkpoint(self.weights_dir / n) for n in ("best.pt", "last.pt")]
        shown = [f"{n} {b / 1e6:.1f} -> {a / 1e6:.1f} MB" for n, s in zip(("best.pt", "last.pt"), sizes)
                 if s is not None for b, a in [s] if b != a]
        if shown:
            print("stripped optimizer state from " + ", ".join(shown))

    def _run_callbacks(self, event: str) -> None:
        for fn in self.callbacks.get(event, []):
            fn(self)
