"""The README's "## Python" section runs as written: its ```python blocks, in order, in one namespace,
in a fresh folder."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_section_blocks() -> list[str]:
    text = README.read_text()
    section = re.search(r"^## Python\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Python' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


def test_the_python_section_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    blocks = python_section_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md ## Python, block {i + 1}", "exec"), namespace)
    assert (tmp_path / "street_pred.png").is_file() and (tmp_path / "yolov10n.pt").is_file()
    assert "yolov10n" in capsys.readouterr().out
