"""Test-session setup: keep torch to the 2 cores CI has; paths live in zoo_test_paths."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so nested test folders find zoo_test_paths
torch.set_num_threads(min(2, torch.get_num_threads()))
