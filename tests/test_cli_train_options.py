"""``zoo train`` options (issue 16: items 4, 5, 8): bad values are one line with exit code 2 before any
run folder, defaults follow the device, key=value aliases, --help documents every option, and a
finished run's checkpoints lose their optimizer state."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from tiny_cfgs import TINY_DETECT
from zoo.cli import main
from zoo.commands.train import add_arguments
from zoo.engine.train_options import (CPU_DEFAULTS, SAM_PROMPT_MIX, FilledDefaults, fill_size_defaults,
                                      rewrite_key_value, within_budget)

FAST = ["--workers", "0", "--device", "cpu", "--no-progress", "--no-plots"]
DATA = ["--data", "shapes:n_train=4,n_val=2"]


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_DETECT)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--batch", "0"], "--batch 0: must be >= 1"),
    (["--epochs", "0"], "--epochs 0: must be >= 1"),
    (["--imgsz", "0"], "--imgsz 0: must be >= 8"),
    (["--lr-scale", "foo"], "expected KEY=FACTOR"),
    (["--lr-scale", "0=abc"], "expected KEY=FACTOR"),
    (["--lr-scale", "foo=0.1"], "'foo' matches no parameter; use row numbers 0-5"),
    (["--freeze", "backbone"], "--freeze backbone matches no parameter; use row numbers 0-5"),
    (["--data", "shapes:n_train=abc"], "n_train=abc is not valid; n_train takes an integer"),
    (["epohcs=3"], "unknown argument 'epohcs=3': no option 'epohcs'; did you mean epochs?"),
])
def test_bad_values_are_one_line_exit_2_before_any_folder(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          extra: list[str], message: str) -> None:
    argv = ["train", str(cfg), *FAST, *(DATA if "--data" not in extra else []), *extra]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err
    assert not (tmp_path / "runs").exists()


def test_imgsz_rounds_up_with_a_warning_and_key_value_aliases(cfg: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    rc = main(["train", f"model={cfg}", "imgsz=50", "epochs=1", "batch=2", "workers=0", "device=cpu",
               "progress=false", "plots=False", "val=no", "--lr-scale", "0=0.5", "data=shapes:n_train=4,n_val=2",
               "lr0=0.002"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "warning: --imgsz 50 is not a multiple of the model's largest stride 32; using 64" in out
    assert "ETA for training ~" in out and "CPU defaults" not in out  # every size (and lr) was given
    saved = yaml.safe_load((tmp_path / "runs" / "detect" / "train" / "args.yaml").read_text())
    assert (saved["imgsz"], saved["epochs"], saved["batch"], saved["val"], saved["plots"]) == (64, 1, 2, False, False)
    assert saved["lr_scale"] == ["0=0.5"] and saved["data"] == "shapes:n_train=4,n_val=2" and saved["lr"] == 0.002


def test_key_value_rewrite_leaves_option_values_alone() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv, unknown = rewrite_key_value(parser, ["cfg.yaml", "--lr-scale", "image_encoder=0.1", "freeze=0,1",
                                               "ema=false", "channels-last=true", "lr0=0.02", "bogus=1"])
    assert argv == ["cfg.yaml", "--lr-scale", "image_encoder=0.1", "--freeze", "0", "1", "--no-ema",
                    "--channels-last", "--lr", "0.02"]
    assert unknown == ["bogus=1"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--plugin", action="append", default=[])
    return parser


def test_defaults_follow_the_device(cfg: Path, capsys: pytest.CaptureFixture) -> None:
    from zoo.engine.setup import build_for_task
    from zoo.engine.trainer import Trainer

    # On CPU, the short run measured on a 2-core machine (yolov10n: mAP50 > 0.3 in about ten minutes):
    # 1200 shapes images at 128 px, batch 16, 6 epochs, AdamW lr 0.003. The tiny model is far under the
    # compute budget, so these sizes are kept as they are.
    trainer = Trainer(_parser().parse_args([str(cfg), *FAST]))
    a = trainer.args
    assert (a.data, a.imgsz, a.batch, a.epochs, a.lr) == ("shapes:n_train=1200,n_val=64", 128, 16, 6, 0.003)
    assert trainer.imgsz == 128 and trainer.task.spec.shapes.n_train == 1200
    assert trainer.size_note.startswith("CPU defaults: 1200/64 shapes images (train/val), imgsz 128, batch 16, "
                                        "6 epochs, lr 0.003 (on CUDA: 2000 shapes images")

    args = _parser().parse_args([str(cfg), *FAST])  # on CUDA: the full-size defaults, as before
    filled: list[FilledDefaults] = []
    model, task, imgsz = build_for_task(args, verbose=False,
                                        before_data=lambda name: filled.append(fill_size_defaults(args, name, cuda=True)))
    assert (args.data, imgsz, args.batch, args.epochs, args.lr) == (None, 320, 16, 10, None)
    assert filled[0].note(imgsz) == "" and filled[0].budget is None


def test_cpu_lr_and_prompt_mix_only_fill_what_was_left_unset() -> None:
    args = _parser().parse_args(["x.yaml", "--optimizer", "SGD", "--epochs", "2"])
    note = fill_size_defaults(args, "detect", cuda=False).note(128)
    assert args.lr is None and args.epochs == 2  # SGD keeps its own lr default (0.01)
    assert "lr" not in note and "6 epochs" not in note and "--data/--imgsz/--batch to choose" in note

    args = _parser().parse_args(["x.yaml"])
    note = fill_size_defaults(args, "segment", cuda=False).note(128)  # SAM learns from box prompts first
    assert (args.sam_prompt_mix, args.imgsz, args.batch, args.epochs) == ("1,0,0", 128, 8, 5)
    assert "box prompts only (--sam-prompt-mix 1,0,0)" in note and "all prompt types" in note
    args = _parser().parse_args(["x.yaml", "--sam-prompt-mix", "0,1,0"])
    fill_size_defaults(args, "segment", cuda=False)
    assert args.sam_prompt_mix == "0,1,0"
    args = _parser().parse_args(["x.yaml"])
    fill_size_defaults(args, "segment", cuda=True)
    assert args.sam_prompt_mix == SAM_PROMPT_MIX and args.lr is None


def test_heavier_models_get_fewer_images_then_fewer_epochs() -> None:
    detect = CPU_DEFAULTS["detect"]
    budget = float(detect.gflops_budget)
    light = budget / (detect.n_train * detect.epochs)  # exactly the budget: the table's sizes
    assert within_budget(detect, light, 16, True) == (detect.n_train, detect.n_val, detect.epochs)
    images, val, epochs = within_budget(detect, 4 * light, 16, True)  # 4x the cost: a quarter of the images
    assert epochs == detect.epochs and images == detect.n_train // 4 // 16 * 16  # whole batches
    assert val == max(32, round(detect.n_val * images / detect.n_train))
    images, val, epochs = within_budget(detect, 100 * light, 16, True)  # 4 steps an epoch, then fewer epochs
    assert (images, val) == (64, 32) and 1 <= epochs < detect.epochs and 100 * light * images * epochs <= budget
    assert within_budget(detect, 100 * light, 16, False) == (64, 32, detect.epochs)  # epochs the user chose stay


def test_a_model_over_the_budget_trains_on_fewer_images(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.engine.cpu_budget import forward_gflops
    from zoo.engine.trainer import Trainer
    from zoo.model import Model

    gflops = forward_gflops(Model(str(cfg)), 128)
    assert gflops is not None and gflops > 0
    tight = dataclasses.replace(CPU_DEFAULTS["detect"], gflops_budget=gflops * 6 * 200)  # room for 200 images
    monkeypatch.setitem(CPU_DEFAULTS, "detect", tight)
    trainer = Trainer(_parser().parse_args([str(cfg), *FAST]))
    assert trainer.args.data == "shapes:n_train=192,n_val=32" and trainer.task.spec.shapes.n_train == 192
    assert trainer.task.spec.shapes.n_val == 32  # the val set shrinks alike (to no fewer than 32)
    assert trainer.args.epochs == 6 and "CPU defaults: 192/32 shapes images" in trainer.size_note
    assert "GFLOPs per image" in trainer.size_note
    assert trainer.args.lr is None and "lr 0.003" not in trainer.size_note  # the usual lr for a heavy model
    given = Trainer(_parser().parse_args([str(cfg), *FAST, "--data", "shapes:n_train=300,n_val=8"]))
    assert given.task.spec.shapes.n_train == 300  # data the user chose is never cut


def test_eta_names_what_it_leaves_out_then_adds_validation(capsys: pytest.CaptureFixture) -> None:
    from zoo.engine.train_outputs import EtaProbe

    probe = EtaProbe("CPU defaults: x", batches=4, epochs_left=3)
    for i in range(4):
        probe.step(i)
    first = capsys.readouterr().out
    assert first.startswith("CPU defaults: x; ETA for training ~") and "validation not included" in first
    assert "the estimate with validation follows epoch 1" in first and first.count("\n") == 1
    probe.first_epoch_done(60.0, 30.0)
    probe.first_epoch_done(60.0, 30.0)  # once
    assert capsys.readouterr().out == ("epoch 1 took 1.5 min (training 60s, validation 30s); ETA ~3.0 min for the "
                                       "other 2 epoch(s), validation included\n")


def test_help_documents_every_option_and_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for action in parser._actions:
        assert action.help, action.dest
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert "default" in action.help, action.dest
    for phrase in ("--batch BATCH total batch size over all processes (default: CUDA 16; CPU 16 detect, 32 classify, "
                   "8 SAM", "(default: 0.0)", "--epochs EPOCHS passes over the training set (default: CUDA 10; CPU 6 "
                   "detect, 6 classify, 5 SAM", "on CPU 0.003 detect, 0.003 classify", "on CPU 1,0,0 SAM",
                   "on CPU 1200/64 detect, 3000/200 classify, 480/16 SAM",
                   "--deterministic deterministic algorithms (slower) (default: off)",
                   "(default: AdamW)", "key=value"):
        assert phrase in text, phrase


def test_finished_run_is_stripped_and_resume_says_finished(cfg: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    rc = main(["train", str(cfg), *DATA, "--imgsz", "64", "--batch", "4", "--epochs", "1", *FAST])
    out = capsys.readouterr().out
    assert rc == 0 and "stripped optimizer state from best.pt" in out
    last = tmp_path / "runs" / "detect" / "train" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["stripped"] and "optimizer" not in ckpt and ckpt["epoch"] == 0
    rc = main(["train", "--resume", str(last), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "already finished its 1 epochs" in out
    assert main(["val", str(last), "--workers", "0", "--device", "cpu"]) == 0  # still a usable checkpoint
