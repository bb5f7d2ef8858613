"""Tiny model configs and argument helpers for the trainer tests (a few steps each)."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY_DETECT = """\
# A five-row backbone and the YOLOv10 head: enough to exercise the whole detection pipeline fast.
nc: 5
backbone:
  - [-1, 1, Conv, [8, 3, 2]]    # 0  /2
  - [-1, 1, Conv, [16, 3, 2]]   # 1  /4
  - [-1, 1, Conv, [16, 3, 2]]   # 2  /8
  - [-1, 1, Conv, [24, 3, 2]]   # 3  /16
  - [-1, 1, Conv, [32, 3, 2]]   # 4  /32
head:
  - [[2, 3, 4], 1, v10Detect, [nc]]
"""

TINY_CLASSIFY = """\
nc: 5
backbone:
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
head:
  - [-1, 1, Classify, [nc]]
"""


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
