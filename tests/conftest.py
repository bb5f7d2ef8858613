"""Shared test setup: fixture location, thread count, small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"
CFG = REPO / "cfg"

torch.set_num_threads(min(2, torch.get_num_threads()))


def fixture_dir(name: str) -> Path:
    """``../shared/fixtures/<name>``; skips the test when the fixtures are not checked out beside the repo."""
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"fixture folder {path} not present")
    return path
