"""``zoo train`` options (issue 16: items 4, 5, 8): bad values are one line with exit code 2 before any
run folder, defaults follow the device, key=value aliases, --help documents every option, and a
finished run's checkpoints lose their optimizer state."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import yaml

from tiny_cfgs import TINY_DETECT
from zoo.cli import main
from zoo.commands.train import add_arguments
from zoo.engine.train_options import fill_size_defaults, rewrite_key_value

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
               "progress=false", "plots=False", "val=no", "--lr-scale", "0=0.5", "data=shapes:n_train=4,n_val=2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "warning: --imgsz 50 is not a multiple of the model's largest stride 32; using 64" in out
    assert "ETA for training ~" in out and "CPU defaults" not in out  # every size was given
    saved = yaml.safe_load((tmp_path / "runs" / "detect" / "train" / "args.yaml").read_text())
    assert (saved["imgsz"], saved["epochs"], saved["batch"], saved["val"], saved["plots"]) == (64, 1, 2, False, False)
    assert saved["lr_scale"] == ["0=0.5"] and saved["data"] == "shapes:n_train=4,n_val=2"


def test_key_value_rewrite_leaves_option_values_alone() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv, unknown = rewrite_key_value(parser, ["cfg.yaml", "--lr-scale", "image_encoder=0.1", "freeze=0,1",
                                               "ema=false", "channels-last=true", "lr0=0.02", "bogus=1"])
    assert argv == ["cfg.yaml", "--lr-scale", "image_encoder=0.1", "--freeze", "0", "1", "--no-ema",
                    "--channels-last", "--lr", "0.02"]
    assert unknown == ["bogus=1"]


def test_defaults_follow_the_device(cfg: Path, capsys: pytest.CaptureFixture) -> None:
    from zoo.engine.setup import build_for_task
    from zoo.engine.trainer import Trainer

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--plugin", action="append", default=[])
    trainer = Trainer(parser.parse_args([str(cfg), *FAST]))  # nothing sized: the CPU defaults
    a = trainer.args
    assert (a.data, a.imgsz, a.batch, a.epochs) == ("shapes:n_train=256,n_val=32", 160, 8, 3)
    assert trainer.imgsz == 160 and trainer.task.spec.shapes.n_train == 256
    assert trainer.size_note.startswith("CPU defaults: 256/32 shapes images (train/val), imgsz 160, batch 8, 3 epochs")

    args = parser.parse_args([str(cfg), *FAST])  # on CUDA: the full-size defaults, as before
    notes: list[str] = []
    model, task, imgsz = build_for_task(args, verbose=False,
                                        before_data=lambda name: notes.append(fill_size_defaults(args, name, cuda=True)))
    note = notes[0]
    assert (args.data, imgsz, args.batch, args.epochs, note) == (None, 320, 16, 10, "")


def test_help_documents_every_option_and_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for action in parser._actions:
        assert action.help, action.dest
    for phrase in ("--batch BATCH total batch size over all processes (default: CUDA 16; CPU 8",
                   "(default: 0.0)", "--epochs EPOCHS passes over the training set (default: CUDA 10; CPU 3",
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
