"""The trainer on tiny models and a few steps: run folder, checkpoints, exact resume, divergence."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch

from zoo.commands.train import add_arguments
from zoo.engine.trainer import Trainer

DATA = "shapes:n_train=8,n_val=4,max_objects=3"


def _args(cfg: Path, project: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--plugin", action="append", default=[])
    return parser.parse_args([str(cfg), "--data", DATA, "--imgsz", "64", "--batch", "4", "--workers", "0",
                              "--device", "cpu", "--project", str(project), "--no-progress", *extra])


class Stop(Exception):
    pass


def test_detect_run_folder_and_checkpoint_layout(tiny_detect_cfg: Path, tmp_path: Path) -> None:
    result = Trainer(_args(tiny_detect_cfg, tmp_path, "--epochs", "2")).train()
    run = tmp_path / "train"
    assert result.status == "done" and result.save_dir == run
    for name in ("args.yaml", "results.csv", "results.png", "train_batch.jpg", "val_predictions.jpg",
                 "weights/last.pt", "weights/best.pt"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train/box", "train/cls", "train/dfl", "mAP50", "mAP50-95", "lr", "time", "skipped"} <= set(rows[0])
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)  # plain types and tensors only
    assert ckpt["format"] == "zoo-train/1" and ckpt["epoch"] == 1 and ckpt["task"] == "detect"
    assert ckpt["yaml"]["nc"] == 5 and ckpt["names"][0] == "circle"
    # the run ended: both files keep the weights and what describes them, not the optimizer state
    assert set(ckpt) >= {"model_state", "yaml", "names", "args", "metrics", "epoch", "ema"}
    assert ckpt["stripped"] and not {"train_state", "optimizer", "schedule", "rng", "scaler"} & set(ckpt)
    assert "train_state" not in torch.load(run / "weights" / "best.pt", weights_only=True)
    assert not list((run / "weights").glob("*.tmp"))

    from zoo import Model

    model = Model.from_checkpoint(run / "weights" / "best.pt")
    report = model.load(run / "weights" / "best.pt", verbose=False)
    assert report.ok and model.nc == 5

    # A second run with the same name gets a numbered folder; --exist-ok reuses it.
    again = Trainer(_args(tiny_detect_cfg, tmp_path, "--epochs", "1", "--no-val", "--no-plots")).train()
    assert again.save_dir == tmp_path / "train2"
    reused = Trainer(_args(tiny_detect_cfg, tmp_path, "--epochs", "1", "--no-val", "--no-plots", "--exist-ok")).train()
    assert reused.save_dir == tmp_path / "train"


def test_resume_continues_exactly(tiny_detect_cfg: Path, tmp_path: Path) -> None:
    common = ("--epochs", "3", "--no-plots", "--lr", "0.01")
    straight = Trainer(_args(tiny_detect_cfg, tmp_path, *common, "--name", "straight")).train()

    def interrupt(trainer: Trainer) -> None:
        if trainer.epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        Trainer(_args(tiny_detect_cfg, tmp_path, *common, "--name", "broken"),
                callbacks={"on_epoch_end": [interrupt]}).train()
    last = tmp_path / "broken" / "weights" / "last.pt"
    mid = torch.load(last, weights_only=True)
    assert mid["epoch"] == 0  # an unfinished run keeps everything resuming needs
    assert set(mid) >= {"train_state", "optimizer", "schedule", "ema", "rng"} and "stripped" not in mid
    resumed = Trainer(_args(tiny_detect_cfg, tmp_path, "--resume", str(last))).train()
    assert resumed.save_dir == tmp_path / "broken"

    a = torch.load(straight.save_dir / "weights" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert b["epoch"] == 2
    for name, tensor in a["model_state"].items():  # the EMA weights: they depend on every step taken
        assert torch.equal(tensor, b["model_state"][name]), name
    assert a["ema"]["updates"] == b["ema"]["updates"]
    rows = list(csv.DictReader(open(tmp_path / "broken" / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_non_finite_loss_stops_and_keeps_last_good(tiny_detect_cfg: Path, tmp_path: Path) -> None:
    trainer = Trainer(_args(tiny_detect_cfg, tmp_path, "--epochs", "3", "--no-plots", "--no-val"))

    def poison(t: Trainer) -> None:
        if t.epoch == 0:
            real = t.loss_fn.forward
            t.loss_fn.forward = lambda preds, batch: (real(preds, batch)[0] * float("nan"), {"box": float("nan")})

    trainer.callbacks = {"on_epoch_end": [poison]}
    result = trainer.train()
    assert result.status == "diverged" and "non-finite loss" in result.message and "epoch 2" in result.message
    ckpt = torch.load(tmp_path / "train" / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model_state"].values() if v.dtype.is_floating_point)


def test_classify_trains_and_reports_topk(tiny_classify_cfg: Path, tmp_path: Path) -> None:
    result = Trainer(_args(tiny_classify_cfg, tmp_path, "--epochs", "1", "--imgsz", "32")).train()
    assert result.status == "done"
    assert {"top1", "top5", "val/cls"} <= set(result.metrics)
    assert (tmp_path / "train" / "val_predictions.jpg").is_file()


def test_freeze_and_weights(tiny_detect_cfg: Path, tmp_path: Path) -> None:
    first = Trainer(_args(tiny_detect_cfg, tmp_path, "--epochs", "1", "--no-val", "--no-plots")).train()
    trainer = Trainer(_args(tiny_detect_cfg, tmp_path, "--epochs", "1", "--no-val", "--no-plots", "--freeze", "0-1",
                            "--weights", str(first.save_dir / "weights" / "last.pt")))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.startswith("model.0.conv")}
    trainer.train()
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert not any(p.requires_grad for n, p in trainer.model.named_parameters() if n.startswith("model.1."))


def test_channels_last_training_matches_default_layout(tiny_detect_cfg: Path, tmp_path: Path) -> None:
    common = ("--epochs", "1", "--no-plots", "--no-val", "--lr", "0.01")
    plain = Trainer(_args(tiny_detect_cfg, tmp_path, *common, "--name", "plain")).train()
    last = Trainer(_args(tiny_detect_cfg, tmp_path, *common, "--name", "nhwc", "--channels-last")).train()
    a = torch.load(plain.save_dir / "weights" / "last.pt", weights_only=True)["model_state"]
    b = torch.load(last.save_dir / "weights" / "last.pt", weights_only=True)["model_state"]
    assert a.keys() == b.keys()
    moved = 0
    for name, tensor in a.items():
        if tensor.dtype.is_floating_point:
            assert torch.allclose(tensor, b[name], rtol=1e-3, atol=1e-5), name
            moved += int(not torch.equal(tensor, b[name]))
    assert moved > 0  # different conv kernels ran: the layouts agree to rounding, not bit for bit

    from zoo import Model

    model = Model.from_checkpoint(last.save_dir / "weights" / "last.pt")  # loads into the default layout
    assert model.load(last.save_dir / "weights" / "last.pt", verbose=False).ok


def test_stop_mid_epoch_saves_a_checkpoint_that_resumes_exactly(tiny_detect_cfg: Path, tmp_path: Path) -> None:
    from zoo.errors import TrainingInterrupted

    common = ("--epochs", "2", "--no-plots", "--lr", "0.01")  # 8 images, batch 4: two steps an epoch
    straight = Trainer(_args(tiny_detect_cfg, tmp_path, *common, "--name", "straight")).train()
    steps = 0

    def signal_during_step_3(trainer: Trainer) -> None:  # what the SIGINT handler does mid-step
        real = trainer.loss_fn.forward

        def counting(preds, batch):
            nonlocal steps
            if trainer.stops.between_steps:
                steps += 1
                if steps == 3:
                    trainer.stops.requested = "SIGINT"
            return real(preds, batch)

        trainer.loss_fn.forward = counting

    cut = Trainer(_args(tiny_detect_cfg, tmp_path, *common, "--name", "cut"),
                  callbacks={"on_train_start": [signal_during_step_3]})
    with pytest.raises(TrainingInterrupted, match=r"interrupted in epoch 2 after step 1/2; resume with: zoo train"):
        cut.train()
    last = tmp_path / "cut" / "weights" / "last.pt"
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0 and saved["partial"]["step"] == 1 and "train_state" in saved
    Trainer(_args(tiny_detect_cfg, tmp_path, "--resume", str(last))).train()
    a = torch.load(straight.save_dir / "weights" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert b["epoch"] == 1 and a["ema"]["updates"] == b["ema"]["updates"]
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "cut" / "results.csv"))] == ["1", "2"]
