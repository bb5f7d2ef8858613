"""Per-row summary: params, GFLOPs at the real image size, output shapes.

Counting rule (also stated in the README): FLOPs = 2 x multiply-accumulates of every convolution,
linear layer, matmul/bmm/einsum and scaled-dot-product attention that runs in a real forward pass
at the requested image size, batch 1, eval mode, counted by ``torch.utils.flop_counter`` per row.
Normalisation, activations, pooling, resampling and element-wise ops are not counted (they are
a few percent at most for these models). Nothing is extrapolated from a smaller input, so window
padding, attention over all tokens and per-size anchors are counted as they run.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from zoo.model import Model

__all__ = ["RowStat", "profile_rows", "summarize", "format_count"]


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """q @ k^T plus attn @ v: ``2*B*H*Nq*Nk*(d_qk + d_v)``."""
    b, h, n_q, d_qk = query_shape
    n_k = key_shape[-2]
    d_v = value_shape[-1]
    return 2 * b * h * n_q * n_k * (d_qk + d_v)


def _register_missing_formulas() -> None:
    # torch's counter knows the CUDA attention kernels and the math fallback, but not the fused
    # CPU kernel that F.scaled_dot_product_attention dispatches to for equal head dims
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None and op not in flop_registry and op.default not in flop_registry:
            register_flop_formula(op)(_sdpa_flops)


_register_missing_formulas()


@dataclass
class RowStat:
    index: int
    params: int
    gflops: float | None  # None: could not be counted, see ``reason``
    out_shape: str
    reason: str = ""


def _shape(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return "x".join(str(d) for d in out.shape)
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in list(out.items())[:2]) + "}"
    if isinstance(out, (list, tuple)):
        inner = ", ".join(_shape(o) for o in out[:4])
        return f"[{inner}{', ...' if len(out) > 4 else ''}]"
    return type(out).__name__


def _hw(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    h, w = imgsz
    return int(h), int(w)


@torch.no_grad()
def profile_rows(model: "Model", imgsz: int | tuple[int, int] = 640, **inputs: Any) -> list[RowStat]:
    """Run one eval forward at ``imgsz`` counting FLOPs per row (see the module docstring)."""
    h, w = _hw(imgsz)
    counters: dict[int, FlopCounterMode] = {}
    shapes: dict[int, str] = {}
    active: list[FlopCounterMode] = []

    def before(index: int):
        def hook(module, args):
            mode = FlopCounterMode(display=False)
            mode.__enter__()
            active.append(mode)
            counters[index] = mode
        return hook

    def after(index: int):
        def hook(module, args, out):
            active.pop().__exit__(None, None, None)
            shapes[index] = _shape(out)
        return hook

    handles = []
    for rec, module in zip(model.records, model.model):
        handles.append(module.register_forward_pre_hook(before(rec.index)))
        handles.append(module.register_forward_hook(after(rec.index)))
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    failure = ""
    try:
        model.run_rows(torch.zeros(1, model.ch, h, w, device=device, dtype=dtype), inputs)
    except Exception as exc:  # a size the model cannot take: report per row, never crash the summary
        failure = f"forward failed at {h}x{w}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        while active:
            active.pop().__exit__(None, None, None)
        for handle in handles:
            handle.remove()
        model.train(was_training)

    stats = []
    for rec, module in zip(model.records, model.model):
        params = sum(p.numel() for p in module.parameters())
        if rec.index in shapes:
            gflops = counters[rec.index].get_total_flops() / 1e9
            stats.append(RowStat(rec.index, params, gflops, shapes[rec.index]))
        else:
            stats.append(RowStat(rec.index, params, None, "-", failure or "row did not run"))
    return stats


def format_count(n: int) -> str:
    return f"{n:,}"


def _args_text(args: tuple, width: int = 42) -> str:
    text = str(list(args))
    return text if len(text) <= width else text[: width - 3] + "..."


def _totals(model: "Model", stats: list[RowStat]) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    grads = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counted = [s.gflops for s in stats if s.gflops is not None]
    complete = len(counted) == len(stats)
    return {
        "layers": len(list(model.modules())),
        "params": params,
        "gradients": grads,
        "gflops": sum(counted) if complete else None,
    }


def _summary_line(name: str, totals: dict[str, Any]) -> str:
    gf = f"{totals['gflops']:.1f} GFLOPs" if totals["gflops"] is not None else "GFLOPs n/a"
    return (f"{name} summary: {totals['layers']:,} layers, {totals['params']:,} parameters, "
            f"{totals['gradients']:,} gradients, {gf}")


def summarize(model: "Model", imgsz: int | tuple[int, int] = 640, detailed: bool = False, verbose: bool = True,
              deploy: bool | None = None) -> dict[str, Any]:
    """Print the per-row table and the totals line; return the numbers.

    ``deploy`` (default: when the model has training-only branches) also profiles a fused copy with
    those branches dropped — the numbers published tables use.
    """
    h, w = _hw(imgsz)
    stats = profile_rows(model, (h, w))
    totals = _totals(model, stats)
    lines = [f"{'':>4}{'from':>14}{'n':>4}{'params':>12}{'GFLOPs':>9}  {'output':<22}{'module':<22}args"]
    for rec, st in zip(model.records, stats):
        src = str(list(rec.from_)) if isinstance(rec.from_, tuple) else str(rec.from_)
        gf = f"{st.gflops:9.3f}" if st.gflops is not None else f"{'n/a':>9}"
        shape = st.out_shape if len(st.out_shape) <= 21 else st.out_shape[:20] + "…"
        lines.append(f"{rec.index:>4}{src:>14}{rec.repeats:>4}{st.params:>12,}{gf}  {shape:<22}"
                     f"{rec.module:<22}{_args_text(rec.args)}")
    reasons = sorted({s.reason for s in stats if s.gflops is None})
    lines.extend(f"  n/a: {r}" for r in reasons)
    title = f"{model.name}" + (f" (scale {model.scale})" if model.scale else "")
    lines.append(_summary_line(title, totals) + f" at {h}x{w}")

    result: dict[str, Any] = {**totals, "imgsz": (h, w), "rows": stats}
    if deploy is None:
        deploy = any(hasattr(m, "drop_training_branches") for m in model.modules())
    if deploy:
        deployed = copy.deepcopy(model).deploy()
        dstats = profile_rows(deployed, (h, w))
        dtotals = _totals(deployed, dstats)
        result["deploy"] = dtotals
        lines.append(_summary_line(f"{title} deploy (fused, training-only branches dropped)", dtotals) + f" at {h}x{w}")
    if detailed:
        lines.append(f"{'':>5}{'name':<60}{'shape':<20}{'numel':>12}{'grad':>6}{'mean':>10}{'std':>10}")
        for i, (name, p) in enumerate(model.named_parameters()):
            std = p.float().std().item() if p.numel() > 1 else 0.0
            lines.append(f"{i:>5}{name:<60}{str(list(p.shape)):<20}{p.numel():>12,}{str(p.requires_grad):>6}"
                         f"{p.float().mean().item():>10.3g}{std:>10.3g}")
    if verbose:
        print("\n".join(lines))
    result["text"] = "\n".join(lines)
    return result
