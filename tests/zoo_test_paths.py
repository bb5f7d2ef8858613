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


def build_small(name: str, scale: str | None = None):
    """Build a shipped cfg with a 64x64 build-time trial run (keeps tests fast on shared CPUs)."""
    import yaml

    from zoo import Model

    path = CFG / name
    cfg = yaml.safe_load(path.read_text()) | {"imgsz": 64, "yaml_file": str(path)}
    return Model(cfg, scale=scale)
