"""DDP through torchrun: two CPU processes with gloo keep identical weights; command reconstruction."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.commands.train import add_arguments, reconstruct_argv
from zoo.engine.ddp import cuda_device_ids, relaunch_command

ROOT = Path(__file__).resolve().parents[2]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--plugin", action="append", default=[])
    return parser.parse_args(argv)


def test_reconstructed_command_parses_to_the_same_arguments() -> None:
    argv = ["m.yaml", "--data", "shapes:n_train=4", "--epochs", "3", "--no-ema", "--freeze", "0", "1",
            "--lr-scale", "0=0.1", "--lr-scale", "1=0.5", "--plugin", "p.py", "--exist-ok", "--nproc", "2",
            "--resume", "x/last.pt", "--lr", "0.02"]
    args = _parse(argv)
    rebuilt = reconstruct_argv(args)
    assert rebuilt[0] == "train"
    assert vars(_parse(rebuilt[1:])) == vars(args)


def test_device_ids_and_relaunch_target() -> None:
    assert cuda_device_ids("0,1") == [0, 1] and cuda_device_ids("cuda:1") == [1] and cuda_device_ids("cpu") == []
    with pytest.raises(ValueError):
        cuda_device_ids("gpu0")
    script, argv = relaunch_command(["train", "m.yaml"])
    assert script is None and argv == ["train", "m.yaml"]  # under pytest: the zoo command line


def test_two_cpu_ranks_keep_identical_weights(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    from tiny_cfgs import TINY_DETECT

    cfg.write_text(TINY_DETECT)
    argv = ["train", str(cfg), "--data", "shapes:n_train=8,n_val=2,max_objects=2", "--imgsz", "64", "--batch", "4",
            "--epochs", "2", "--workers", "0", "--device", "cpu", "--nproc", "2", "--project", str(tmp_path / "runs"),
            "--no-progress", "--no-plots"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", f"import sys; from zoo.cli import main; sys.exit(main({argv!r}))"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # Rank 0 gathers every rank's parameter checksum after each epoch and raises on any difference.
    assert out.count("DDP: weights identical on 2 ranks") == 2, out[-3000:]
    assert (tmp_path / "runs" / "train" / "weights" / "last.pt").is_file()


def test_user_script_is_relaunched_so_its_modules_exist_in_every_rank(tmp_path: Path) -> None:
    # The script registers a block, then calls zoo; each rank must re-run the script to know the block.
    script = tmp_path / "my_train.py"
    script.write_text(
        "import sys\n"
        "import torch.nn as nn\n"
        "import zoo\n"
        "from zoo.nn.common import Conv\n"
        "from zoo.wiring import in_out\n\n"
        "@zoo.register(wiring=in_out())\n"
        "class ScriptConv(Conv):\n"
        "    pass\n\n"
        "if __name__ == '__main__':\n"
        "    from zoo.cli import main\n"
        "    sys.exit(main(sys.argv[1:]))\n"
    )
    from tiny_cfgs import TINY_DETECT

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_DETECT.replace("[-1, 1, Conv, [16, 3, 2]]   # 1", "[-1, 1, ScriptConv, [16, 3, 2]]   # 1"))
    assert "ScriptConv" in cfg.read_text()
    argv = ["train", str(cfg), "--data", "shapes:n_train=4,n_val=2,max_objects=2", "--imgsz", "64", "--batch", "4",
            "--epochs", "1", "--workers", "0", "--device", "cpu", "--nproc", "2", "--project", str(tmp_path / "runs"),
            "--no-progress", "--no-plots", "--no-val"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script), *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"via torch.distributed.run: {script}" in out and "weights identical on 2 ranks" in out
