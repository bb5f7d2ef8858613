"""Optimizer groups, the warm-up + decay schedule, EMA, atomic checkpoint writes and RNG capture."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from zoo.engine.training_checkpoint import atomic_save, capture_rng, load_training_checkpoint, restore_rng
from zoo.engine.ema import ModelEMA
from zoo.engine.optim import LRSchedule, build_optimizer, parameter_groups
from zoo.engine.run_folder import increment_path
from zoo.engine.setup import TrainSetupError, select_device
from zoo.errors import CheckpointError


def test_weight_decay_only_on_weights_and_lr_scale_groups() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    groups = parameter_groups(net, 0.05, {"2.": 0.1})
    by_kind = {(g["kind"], g["lr_scale"]): g for g in groups}
    assert by_kind[("weight", 1.0)]["params"][0] is net[0].weight
    assert by_kind[("weight", 1.0)]["weight_decay"] == 0.05
    assert all(g["weight_decay"] == 0.0 for g in groups if g["kind"] == "bias_norm")
    assert by_kind[("weight", 0.1)]["params"][0] is net[2].weight
    opt = build_optimizer(net, "SGD", 0.01, 0.9, 5e-4, {"2.": 0.1})
    assert {g["lr"] for g in opt.param_groups} == {0.01, 0.001}
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(net, "Lion", 0.01, 0.9, 0.0)


def test_schedule_warmup_then_cosine_and_linear() -> None:
    net = nn.Conv2d(3, 4, 3)
    opt = build_optimizer(net, "SGD", 0.1, 0.9, 0.0)
    sched = LRSchedule(lr=0.1, total=100, warmup=10, lrf=0.01, warmup_bias_lr=0.2, momentum=0.9)
    sched.apply(opt, 0)
    lrs = {g["kind"]: g["lr"] for g in opt.param_groups}
    assert lrs["weight"] == 0.0 and lrs["bias_norm"] == pytest.approx(0.2)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    sched.apply(opt, 10)
    assert all(g["lr"] == pytest.approx(0.1 * sched.factor(10)) for g in opt.param_groups)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.9)
    assert sched.factor(0) == pytest.approx(1.0) and sched.factor(100) == pytest.approx(0.01)
    assert sched.factor(50) == pytest.approx(0.505)
    linear = LRSchedule(lr=1.0, total=10, kind="linear", lrf=0.0)
    assert linear.factor(5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        LRSchedule(lr=1.0, total=10, kind="step")


def test_ema_tracks_weights_and_copies_buffers() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(net, decay=0.5, tau=1e-9)  # no ramp: decay is 0.5 from the first update
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].num_batches_tracked.fill_(7)
    before = ema.ema[0].weight.clone()
    ema.update(net)
    assert torch.allclose(ema.ema[0].weight, before + 0.5)
    assert int(ema.ema[1].num_batches_tracked) == 7
    state = ema.state_dict()
    other = ModelEMA(net)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.ema[0].weight, ema.ema[0].weight)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "weights" / "last.pt"
    atomic_save({"epoch": 1}, path)
    real_save = torch.save

    def crash(obj, fh, *a, **k):
        real_save({"partial": torch.zeros(1000)}, fh)
        raise KeyboardInterrupt  # killed mid-save

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_rng_capture_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    atomic_save({"rng": capture_rng()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_resume_refuses_foreign_files(tmp_path: Path) -> None:
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a zoo training checkpoint"):
        load_training_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_training_checkpoint(tmp_path / "missing.pt")


def test_run_names_and_devices(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train2").mkdir()
    assert increment_path(tmp_path / "train", False) == tmp_path / "train3"
    assert increment_path(tmp_path / "train", True) == tmp_path / "train"
    assert select_device("cpu").type == "cpu"
    with pytest.raises(TrainSetupError):
        select_device("zero")
    if not torch.cuda.is_available():
        with pytest.raises(TrainSetupError, match="CUDA is not available"):
            select_device("0")
