"""Which row of a model holds the op an export failed on, for a one-line error naming it.

The exporter's error names an operator (``aten::fft_rfft2``) but not where it sits. The model runs
once with every row's input kept, then each row is exported alone on its own input until one fails
the same way: that row (index, section, module name) goes into the :class:`~zoo.errors.ConfigError`.
Only run after a failure, so a working export never pays for it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from zoo.errors import ConfigError
from zoo.export.graphs import flat_tensors
from zoo.export.onnx import unsupported_op
from zoo.export.options import ExportError

__all__ = ["RowGraph", "failing_row_error"]

RowExporter = Callable[[nn.Module, tuple[torch.Tensor, ...]], None]


class RowGraph(nn.Module):
    """One row as a graph of tensors: its input list (or single input) in, its tensors out."""

    def __init__(self, module: nn.Module, takes_list: bool) -> None:
        super().__init__()
        self.row = module
        self.takes_list = takes_list

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flat_tensors(self.row(list(inputs) if self.takes_list else inputs[0]))


def _row_inputs(model: Any, example: torch.Tensor) -> dict[int, Any]:
    """Every row's input on ``example`` (rows run once, as the model does)."""
    seen: dict[int, Any] = {}

    def keep(index: int, record: Any, row_in: Any, out: Any) -> None:
        seen[index] = row_in

    with torch.no_grad():
        model.run_rows(example, hook=keep)
    return seen


def failing_row_error(model: Any, example: torch.Tensor, exc: BaseException, op: str, export_row: RowExporter,
                      what: str, fix: Callable[[str], str | None] = lambda op: None) -> Exception:
    """The error to raise for export failure ``exc`` (on ``op``) of ``model`` (a zoo Model: ``records``,
    ``model`` rows, ``run_rows``): a ConfigError naming the first row that fails alone, else an
    ExportError naming the op. ``export_row(row_graph, inputs)`` raises where the export does;
    ``what`` says what failed ("ONNX opset 17"); ``fix(op)`` a better fix than rewriting the block, when
    there is one (a newer opset)."""
    try:
        inputs = _row_inputs(model, example)
    except Exception:  # the model does not even run on the example: report the exporter's error
        inputs = {}
    for record, module in zip(getattr(model, "records", ()), getattr(model, "model", ())):
        row_in = inputs.get(record.index)
        if row_in is None:
            continue
        tensors = flat_tensors(row_in)
        if not tensors:
            continue
        try:
            export_row(RowGraph(module, isinstance(row_in, (list, tuple))), tensors)
        except Exception as row_exc:
            from_row = unsupported_op(row_exc)
            remedy = fix(from_row) or "rewrite the block with ops the format supports (or drop the row)"
            return ConfigError(f"{record.module} cannot be exported: {what} has no form for {from_row}; {remedy}",
                               file=getattr(model, "source", None), row=record.index, section=record.section)
    return ExportError(f"export failed: {what} has no form for {op}" + (f"; {fix(op)}" if fix(op) else ""))
