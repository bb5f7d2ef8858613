"""Distributed data-parallel training through ``torchrun``.

``zoo train ... --device 0,1`` (one process per GPU, NCCL) or ``--nproc N`` (N CPU processes, gloo)
re-launches the user's own command under ``torch.distributed.run``. Re-running the same command
(rather than a fixed entry point) means plugins the user registers, with ``--plugin`` or in their
own script before calling :func:`zoo.cli.main`, are registered in every process. Each child sees
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and trains as one rank instead of launching again.

torchrun starts ``python -m zoo.cli`` in each rank (the engine never imports the CLI); it asks
:func:`rank_command` for the command to re-run, which travels in the environment (``ZOO_DDP_ARGV``,
and ``ZOO_DDP_SCRIPT`` for a user script).
"""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

_ENV_ARGV = "ZOO_DDP_ARGV"
_ENV_SCRIPT = "ZOO_DDP_SCRIPT"

__all__ = ["DistInfo", "dist_info", "init_distributed", "launch", "relaunch_command", "replica_checksums",
           "check_replicas", "cuda_device_ids"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def dist_info() -> DistInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 outside one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)


def cuda_device_ids(device: str | None) -> list[int]:
    """``"0,1"`` -> [0, 1]; ``"cuda:1"`` -> [1]; ``"cuda"`` -> [0]; cpu / auto -> []."""
    text = (device or "").strip().lower()
    if text in ("", "cpu", "auto"):
        return []
    if text in ("cuda", "gpu"):
        return [0]
    text = text.removeprefix("cuda:")
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--device must be cpu, cuda, or GPU ids like 0 or 0,1; got '{device}'") from None


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group: NCCL on CUDA, gloo on CPU."""
    if not info.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)


def _is_user_script(path: str) -> bool:
    """A Python file the user wrote and ran: not part of zoo, the standard library or an installed
    package (pytest, the ``zoo`` console script, ``python -m`` of an installed tool)."""
    if not path.endswith(".py") or not Path(path).is_file():
        return False
    resolved = Path(path).resolve()
    roots = [Path(__file__).resolve().parents[1]]
    roots += [Path(p).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib")
              if (p := sysconfig.get_paths().get(key))]
    return not any(root == resolved.parent or root in resolved.parents for root in roots)


def relaunch_command(cli_argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """What each rank runs: ``(script, argv)``.

    When the parent was started as a user's Python script, that script is re-run with its own
    arguments (so whatever it registered before calling zoo is registered again); otherwise
    (``script`` is ``None``) the zoo command line ``cli_argv`` is re-run.
    """
    if sys.argv and _is_user_script(sys.argv[0]):
        return str(Path(sys.argv[0]).resolve()), list(sys.argv[1:])
    return None, list(cli_argv)


def launch(nproc: int, cli_argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run ``nproc`` ranks with ``torch.distributed.run`` on this machine; returns its exit code.

    The command travels in environment variables rather than on torchrun's command line, where
    torchrun's own option parser would trip over options such as ``--nproc``.
    """
    script, argv = relaunch_command(cli_argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "zoo.cli"]  # the CLI runs the rank (rank_command tells it what)
    child_env = dict(os.environ if env is None else env)
    child_env[_ENV_ARGV] = json.dumps(argv)
    child_env.pop(_ENV_SCRIPT, None)
    if script:
        child_env[_ENV_SCRIPT] = script
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # Make the zoo package importable in the children even when it is not installed.
    root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = root + (os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else "")
    shown = " ".join([script or "zoo", *argv])
    print(f"DDP: {nproc} processes via torch.distributed.run: {shown}", flush=True)
    return subprocess.call(cmd, env=child_env)


@torch.no_grad()
def replica_checksums(model: nn.Module) -> torch.Tensor:
    """(world, 2) float64 per-rank [sum, sum of squares] over every parameter.

    Buffers are left out: DDP broadcasts rank 0's buffers (BatchNorm statistics) at the start of
    each forward, so between steps each rank legitimately holds the statistics of its own batch.
    """
    total = torch.zeros(2, dtype=torch.float64)
    for t in model.parameters():
        if t.dtype.is_floating_point:
            v = t.detach().double().cpu()
            total[0] += v.sum()
            total[1] += (v * v).sum()
    if not dist.is_initialized():
        return total[None]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.zeros(2, dtype=torch.float64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total.to(device))
    return torch.stack([g.cpu() for g in gathered])


def check_replicas(model: nn.Module) -> str:
    """Raise if the ranks' weights differ at all; otherwise a one-line confirmation."""
    sums = replica_checksums(model)
    if not torch.equal(sums, sums[:1].expand_as(sums)):
        raise RuntimeError(f"DDP replicas diverged: per-rank weight checksums {sums.tolist()}")
    return f"DDP: weights identical on {len(sums)} ranks (checksum {sums[0, 0].item():.10g})"


def rank_command() -> tuple[str | None, list[str]] | None:
    """In a rank started by :func:`launch`: ``(user script or None, argv)`` to run; else ``None``."""
    if _ENV_ARGV not in os.environ:
        return None
    return os.environ.get(_ENV_SCRIPT), json.loads(os.environ[_ENV_ARGV])


def run_user_script(script: str, argv: list[str]) -> None:
    """Re-run the user's own script in a rank, so the blocks it registers exist there too."""
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")
