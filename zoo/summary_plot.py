"""Charts for ``zoo info --plot`` (per-row params and GFLOPs) and ``zoo sweep`` (variants vs GFLOPs).

Matplotlib runs on the non-interactive Agg backend, so plots work on headless machines.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from zoo.model import Model

__all__ = ["plot_rows", "plot_sweep"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_rows(model: "Model", info_result: dict, out: Path) -> Path:
    """Bar chart of params (top) and GFLOPs (bottom) per row, from ``Model.info()``'s result.

    The three heaviest rows of each panel are labelled with their module name so they stand out;
    rows whose FLOPs could not be counted are drawn as empty (hatched) bars.
    """
    plt = _pyplot()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stats = info_result["rows"]
    names = [rec.module for rec in model.records]
    index = [s.index for s in stats]
    params = [s.params / 1e6 for s in stats]
    gflops = [s.gflops if s.gflops is not None else 0.0 for s in stats]
    h, w = info_result.get("imgsz", (0, 0))

    width = max(6.0, min(16.0, 0.28 * len(stats) + 3))
    fig, (ax_p, ax_g) = plt.subplots(2, 1, figsize=(width, 5.5), sharex=True)
    panels = ((ax_p, params, "params (M)", "#4c72b0"), (ax_g, gflops, f"GFLOPs at {h}x{w}", "#dd8452"))
    for ax, values, label, colour in panels:
        ax.bar(index, values, color=colour)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        for i in sorted(range(len(values)), key=lambda k: -values[k])[:3]:
            if values[i] > 0:
                ax.annotate(names[i], (index[i], values[i]), ha="center", va="bottom", fontsize=7)
    for s, bar in zip(stats, ax_g.patches):
        if s.gflops is None:
            bar.set_hatch("//")
            bar.set_fill(False)
    total_gf = info_result.get("gflops")
    title = f"{model.name}" + (f" ({model.scale})" if model.scale else "")
    title += f": {info_result['params'] / 1e6:.2f}M params"
    title += f", {total_gf:.2f} GFLOPs" if total_gf is not None else ", GFLOPs n/a"
    ax_p.set_title(title, fontsize=10)
    ax_g.set_xlabel("row")
    ax_g.set_xticks(index)
    ax_g.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v else None  # NaN -> None


def _scatter(ax, rows: Sequence[dict], x_key: str, y_key: str, xlabel: str, ylabel: str, y_scale: float = 1.0) -> None:
    points = [(_num(r.get(x_key)), _num(r.get(y_key)), str(r["variant"])) for r in rows]
    points = [(x, y * y_scale if y is not None else None, n) for x, y, n in points]
    points = [(x, y, n) for x, y, n in points if x is not None and y is not None]
    if points:
        xs, ys, labels = zip(*points)
        ax.plot(xs, ys, "o-", color="#4c72b0", markersize=5, linewidth=1)
        for x, y, label in points:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.margins(0.12)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_sweep(rows: Sequence[dict], out: Path, trained: bool = False, title: str = "") -> Path:
    """Two panels, one point per (non-duplicate) variant, labelled with its name, ordered by GFLOPs:
    with training, val metric vs GFLOPs and latency vs GFLOPs; without, latency vs GFLOPs and params vs GFLOPs.

    ``rows`` are sweep CSV rows (strings or numbers). GFLOPs are the deploy graph's (what is timed).
    """
    plt = _pyplot()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    unique = [r for r in rows if not r.get("duplicate_of")]
    unique = sorted(unique, key=lambda r: _num(r.get("gflops_deploy")) or 0.0)
    gf_label = "GFLOPs (deploy graph)"
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    if trained:
        metric_name = next((str(r["metric_name"]) for r in unique if r.get("metric_name")), "metric")
        _scatter(left, unique, "gflops_deploy", "metric", gf_label, f"val {metric_name}")
        _scatter(right, unique, "gflops_deploy", "latency_ms", gf_label, "latency (ms)")
    else:
        _scatter(left, unique, "gflops_deploy", "latency_ms", gf_label, "latency (ms)")
        _scatter(right, unique, "gflops_deploy", "params", gf_label, "params (M)", y_scale=1e-6)
    first = unique[0] if unique else {}
    where = f"imgsz {first.get('imgsz', '?')}, batch {first.get('batch', '?')}, {first.get('device', '?')}"
    fig.suptitle(f"{title} sweep ({where})" if title else f"sweep ({where})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
