"""Tiny model configs and argument helpers for the trainer tests (a few steps each)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_cfgs import TINY_CLASSIFY, TINY_DETECT  # noqa: E402


@pytest.fixture
def tiny_detect_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-det.yaml"
    path.write_text(TINY_DETECT)
    return path


@pytest.fixture
def tiny_classify_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-cls.yaml"
    path.write_text(TINY_CLASSIFY)
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # The CI machine is small and shared: one intra-op thread is faster than two fighting for cores.
    import torch

    torch.set_num_threads(1)
