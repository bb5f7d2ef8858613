"""The README's "## Export" section runs as written: its ```python blocks, in order, in a fresh folder."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from export_helpers import require_runtime
from zoo_test_paths import REPO


def export_section_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Export\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Export' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


def test_the_export_section_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    require_runtime()
    blocks = export_section_blocks()
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md ## Export, block {i + 1}", "exec"), namespace)
    assert (tmp_path / "yolov10n.onnx").is_file()
    out = capsys.readouterr().out
    assert "detect (320, 320) 32 class0 True" in out and "(2, 300, 6)" in out
    assert "1 (240, 320, 3)" in out  # the exported file's predict: one Results at the original size
