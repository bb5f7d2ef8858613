"""Paths shared by the tests (a plain module: several conftest.py files exist, so tests import this)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures"
CFG = REPO / "cfg"


def fixture_dir(name: str) -> Path:
    """``../shared/fixtures/<name>``; skips the test when the fixtures are not checked out beside the repo."""
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"fixture folder {path} not present")
    return path
