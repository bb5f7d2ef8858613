"""Nothing lost on a kill: a real `zoo train` process is killed (or interrupted) while a checkpoint
write is in progress (ZOO_STALL_SAVE makes that point observable), then resumed in this process."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tiny_cfgs import TINY_DETECT
from zoo.cli import main
from zoo.engine.training_checkpoint import STALL_ENV
from zoo.engine.run_folder import claim_run_folder, increment_path, numbered, remove_stale_temporaries, trim_results

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and flock")


def _train_argv(name: str, epochs: int, *extra: str) -> list[str]:
    return ["train", "tiny.yaml", "--data", "shapes:n_train=4,n_val=2,max_objects=2", "--imgsz", "64", "--batch", "2",
            "--workers", "0", "--device", "cpu", "--epochs", str(epochs), "--no-plots", "--no-progress",
            "--project", "runs", "--name", name, *extra]


def _start_stalled(folder: Path, argv: list[str], stall: str) -> subprocess.Popen:
    """Start `zoo train` in a child that stops inside the given checkpoint write; return once it has."""
    (folder / "tiny.yaml").write_text(TINY_DETECT)
    env = {**os.environ, STALL_ENV: stall, "OMP_NUM_THREADS": "1"}
    code = f"import sys; from zoo.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(folder.glob("runs/*/weights/*.stalled")):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"child never reached the write point: {proc.communicate()}")
        time.sleep(0.05)
    return proc


def _epochs(run: Path) -> list[str]:
    return [r["epoch"] for r in csv.DictReader(open(run / "results.csv"))]


def test_kill_between_results_row_and_checkpoint_keeps_each_epoch_once(tmp_path: Path, monkeypatch) -> None:
    proc = _start_stalled(tmp_path, _train_argv("k", 3, "--no-val"), "last.pt:2")  # epoch 2's checkpoint
    proc.kill()
    proc.wait()
    run = tmp_path / "runs" / "k"
    assert _epochs(run) == ["1", "2"]  # epoch 2 was logged, its checkpoint never landed
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["epoch"] == 0
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", str(run / "weights" / "last.pt")]) == 0
    assert _epochs(run) == ["1", "2", "3"]


def test_kill_during_first_best_write_is_repaired_and_temporaries_removed(tmp_path: Path, capsys,
                                                                          monkeypatch) -> None:
    proc = _start_stalled(tmp_path, _train_argv("b", 1, "--no-val"), "best.pt:1")
    proc.kill()
    proc.wait()
    weights = tmp_path / "runs" / "b" / "weights"
    assert not (weights / "best.pt").exists()
    assert len(list(weights.glob(".best.pt.*.tmp"))) == 1  # what a kill leaves behind
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", str(weights / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert torch.load(weights / "best.pt", weights_only=True)["epoch"] == 0
    assert not list(weights.glob("*.tmp"))
    assert "removed 1 unfinished checkpoint write" in out and "best.pt was missing" in out
    # a finished run says so instead of "from epoch 2/1"
    assert "already finished its 1 epochs" in out and "from epoch" not in out


def test_second_run_on_a_locked_folder_fails_and_ctrl_c_prints_one_line(tmp_path: Path, capsys,
                                                                        monkeypatch) -> None:
    proc = _start_stalled(tmp_path, _train_argv("c1", 3, "--no-val", "--exist-ok"), "last.pt:2")
    try:
        monkeypatch.chdir(tmp_path)
        assert main(_train_argv("c1", 1, "--no-val", "--exist-ok")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another zoo run (pid" in err[0]
        # without --exist-ok the name is numbered instead: c1 -> c1-2, not c12
        assert main(_train_argv("c1", 1, "--no-val")) == 0
        assert (tmp_path / "runs" / "c1-2" / "weights" / "last.pt").is_file()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "interrupted in epoch 2 after step 2/2; resume with: zoo train --resume" in lines[0] and "c1/weights/last.pt" in lines[0]
    assert not list((tmp_path / "runs" / "c1" / "weights").glob("*.tmp"))  # the interrupted write cleaned up


def test_run_folder_helpers(tmp_path: Path) -> None:
    assert numbered(tmp_path / "c1", 2).name == "c1-2" and numbered(tmp_path / "train", 2).name == "train2"
    first, second = claim_run_folder(tmp_path / "r", False), claim_run_folder(tmp_path / "r", False)
    assert (first.name, second.name) == ("r", "r2") and increment_path(tmp_path / "r", False).name == "r3"
    (tmp_path / "w").mkdir()
    for name in (".last.pt.123.tmp", ".best.pt.9.tmp", "last.pt"):
        (tmp_path / "w" / name).write_bytes(b"x")
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path / "w")) == [".best.pt.9.tmp", ".last.pt.123.tmp"]
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["last.pt"]
    (tmp_path / "results.csv").write_text("epoch,loss\n1,0.5\n2,0.4\n2,0.4\n3,0.3\n")
    assert trim_results(tmp_path / "results.csv", 1) == 3
    assert (tmp_path / "results.csv").read_text().splitlines() == ["epoch,loss", "1,0.5"]
