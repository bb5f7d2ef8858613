"""``zoo sweep CFG --scales n,s,m,l [--set KEY=V1,V2 ...] [--train]``: build, measure (and train) every variant.

Writes ``sweep.csv`` (one row per variant, rewritten after each) and ``sweep.png`` into
``<project>/<name>`` (default ``runs/sweep/<cfg stem>``, numbered unless ``--exist-ok``). Re-running
the same command with ``--exist-ok`` continues an interrupted sweep: variants already in the CSV
are not measured (or trained) again. Variant paths for ``--set`` are described in :mod:`zoo.variants`.

``--format onnx`` also exports each variant's deployed graph (static, at the measuring size and batch)
to a temporary file and times it on ONNX Runtime by the same method (:func:`zoo.latency.benchmark_exported`):
the ``ORT ms`` column beside the PyTorch latency (``ort_latency_ms`` / ``ort_latency_p90_ms`` in the CSV).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from zoo.errors import ConfigError

__all__ = ["add_arguments", "run", "format_table"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="model YAML")
    p.add_argument("--scales", help="comma-separated scale keys, e.g. n,s,m,l (default: the cfg's default scale)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep a YAML value: nc, imgsz, any top-level key, backbone.I.args.J, head.I.repeats, "
                        "row.I.args.J, scales.S.K (repeatable; the product of all lists is swept)")
    p.add_argument("--imgsz", type=int, help="measuring size (default: the cfg's imgsz, else 640)")
    p.add_argument("--batch", type=int, default=1, help="batch for latency / throughput")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, N or auto")
    p.add_argument("--half", action="store_true", help="time in float16 (CUDA only)")
    p.add_argument("--format", choices=("onnx",),
                   help="also export each variant and time it on this runtime: onnx adds an 'ORT ms' column")
    p.add_argument("--runs", type=int, default=10, help="timed runs per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per variant")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); 1 gives steadier "
                                               "numbers on a machine shared with other jobs")
    g = p.add_argument_group("training (with --train; calls zoo.engine.trainer.Trainer)")
    g.add_argument("--train", action="store_true", help="also train each variant and record its val metric")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--data", help="dataset (as for zoo train; default: the embedded shapes dataset)")
    g.add_argument("--train-batch", type=int, default=16, help="training batch size")
    g.add_argument("--train-imgsz", type=int, help="training size (default: the variant's measuring size)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers for training")
    g.add_argument("--train-args", default="", metavar="'ARGS'",
                   help="extra zoo train options for every variant, e.g. '--lr 0.002 --no-ema'")
    r = p.add_argument_group("run folder")
    r.add_argument("--project", default="runs/sweep", help="parent folder of sweep runs")
    r.add_argument("--name", help="run folder name (default: the cfg's file stem; numbered if taken)")
    r.add_argument("--exist-ok", action="store_true",
                   help="reuse --name; an existing sweep.csv there is continued (its variants are skipped)")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bar")


def _imgsz_of(variant, args: argparse.Namespace) -> int:
    swept = dict(variant.settings)
    if "imgsz" in swept:
        value = swept["imgsz"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"--set imgsz: {value!r} is not a positive integer image size", file=args.cfg)
        return value
    return int(args.imgsz or variant.cfg.get("imgsz") or 640)


def _measure(model, imgsz: int, args: argparse.Namespace, device) -> dict[str, Any]:
    """Counted GFLOPs of the training and deploy graphs, and timing of the deploy graph."""
    from zoo.latency import benchmark, counted_gflops
    from zoo.summary import summarize

    info = summarize(model, imgsz=imgsz, verbose=False)
    deployed = copy.deepcopy(model).deploy()
    gflops_deploy = info["deploy"]["gflops"] if "deploy" in info else counted_gflops(deployed, imgsz)
    timing = benchmark(deployed, imgsz=imgsz, batch=args.batch, device=device, half=args.half,
                       runs=args.runs, warmup=args.warmup, gflops=gflops_deploy, copy_model=False)
    row = {"layers": info["layers"], "params": info["params"], "gflops": info["gflops"],
           "gflops_deploy": gflops_deploy, "latency_ms": timing.median_ms, "latency_p90_ms": timing.p90_ms,
           "images_per_s": timing.images_per_s, "gflops_per_s": timing.gflops_per_s}
    if getattr(args, "format", None) == "onnx":
        row.update(_measure_onnx(model, imgsz, args, device))
    return row


def _measure_onnx(model, imgsz: int, args: argparse.Namespace, device) -> dict[str, Any]:
    """The variant exported to a temporary ONNX file and timed on ONNX Runtime (the file is removed)."""
    import tempfile

    from zoo.export import export_model, load_exported
    from zoo.latency import benchmark_exported

    with tempfile.TemporaryDirectory(prefix="zoo-sweep-") as folder:
        path = export_model(model, "onnx", imgsz=imgsz, batch=args.batch, half=args.half,
                            file=Path(folder) / "variant.onnx")
        session = load_exported(path, str(device), threads=args.threads)
        timing = benchmark_exported(session, batch=args.batch, runs=args.runs, warmup=args.warmup)
        del session  # the runtime keeps the file open on some systems: close it before the folder goes
    return {"ort_latency_ms": timing.median_ms, "ort_latency_p90_ms": timing.p90_ms}


def _train(variant, imgsz: int, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    import shlex

    from zoo.commands import train as train_cmd
    from zoo.engine.trainer import Trainer

    cfg_dir = run_dir / "variants"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = cfg_dir / f"{variant.slug}.yaml"
    cfg = {k: v for k, v in variant.cfg.items() if k not in ("yaml_file", "scale")}
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    argv = [str(cfg_file), "--epochs", str(args.epochs), "--imgsz", str(args.train_imgsz or imgsz),
            "--batch", str(args.train_batch), "--workers", str(args.workers), "--device", args.device,
            "--project", str(run_dir / "train"), "--name", variant.slug, "--exist-ok",
            "--no-progress", "--no-plots"]
    if variant.scale:
        argv += ["--scale", variant.scale]
    if args.data:
        argv += ["--data", args.data]
    argv += shlex.split(args.train_args)
    parser = argparse.ArgumentParser(prog="zoo sweep --train")
    train_cmd.add_arguments(parser)
    targs = parser.parse_args(argv)
    targs.plugin = list(args.plugin)
    t0 = time.time()
    trainer = Trainer(targs)
    result = trainer.train()
    key = trainer.task.fitness_key
    metric = result.best_fitness if key and key in result.metrics else None
    if result.status != "done":
        tqdm.write(f"{variant.name}: {result.message}")
    return {"metric_name": key, "metric": metric, "train_time_s": time.time() - t0, "train_dir": str(result.save_dir)}


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def format_table(rows: list[dict[str, Any]], trained: bool, onnx: bool = False) -> str:
    """A Markdown table (readable in a terminal and pastable into a README); ``onnx``: with the ORT column."""
    head = ["variant", "layers", "params", "GFLOPs train", "GFLOPs deploy", "latency ms", "p90 ms", "images/s",
            "GFLOP/s"]
    if onnx:
        head.insert(head.index("p90 ms") + 1, "ORT ms")
    if trained:
        head += ["metric", "train s"]
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"
    lines = ["| " + " | ".join(head) + " |", rule]

    def f(value: Any, fmt: str) -> str:
        v = _num(value)
        return "n/a" if v is None else format(v, fmt)

    for r in rows:
        name = str(r["variant"]) + (f" (= {r['duplicate_of']})" if r.get("duplicate_of") else "")
        cells = [name, f(r.get("layers"), ",.0f"), f(r.get("params"), ",.0f"), f(r.get("gflops"), ".4g"),
                 f(r.get("gflops_deploy"), ".4g"), f(r.get("latency_ms"), ".1f"), f(r.get("latency_p90_ms"), ".1f"),
                 f(r.get("images_per_s"), ".2f"), f(r.get("gflops_per_s"), ".1f")]
        if onnx:
            cells.insert(head.index("ORT ms"), f(r.get("ort_latency_ms"), ".1f"))
        if trained:
            metric = f(r.get("metric"), ".4f")
            shown = f"{r.get('metric_name')} {metric}" if metric != "n/a" else metric
            cells += [shown, f(r.get("train_time_s"), ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check_resumable(row: dict[str, str], want: dict[str, Any], csv_path: Path) -> None:
    for key in ("imgsz", "batch", "device"):
        if str(row.get(key, "")) != str(want[key]):
            raise ConfigError(f"variant '{row['variant']}' in this sweep.csv was measured with {key} {row.get(key)!r}, "
                              f"this run asks {want[key]!r}; use another --name (or drop --exist-ok) to start afresh",
                              file=str(csv_path))


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        if args.threads < 1:
            from zoo.latency import BenchmarkError

            raise BenchmarkError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from zoo.latency import resolve_device
    from zoo.engine.run_folder import increment_path
    from zoo.model import Model
    from zoo.summary_plot import plot_sweep
    from zoo.variants import (expand_variants, model_signature, parse_set, read_csv, signature_hash,
                           write_csv)

    scales = [s.strip() for s in args.scales.split(",") if s.strip()] if args.scales else None
    overrides = [parse_set(text, args.cfg) for text in args.set]
    variants = expand_variants(args.cfg, scales, overrides)
    device = resolve_device(args.device)
    if args.half and device.type != "cuda":
        raise ConfigError("--half needs a CUDA --device", file=args.cfg)
    imgsz_of = {v.name: _imgsz_of(v, args) for v in variants}
    if args.format == "onnx":  # before any variant is measured, not after the first one
        from zoo.export.options import require

        require("onnx", "zoo sweep --format onnx")
        require("onnxruntime", "zoo sweep --format onnx")

    run_dir = increment_path(Path(args.project) / (args.name or Path(args.cfg).stem), bool(args.exist_ok))
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "sweep.csv"
    done = {r["variant"]: r for r in read_csv(csv_path)}
    names = [v.name for v in variants]
    for name, row in done.items():
        if name in imgsz_of:
            _check_resumable(row, {"imgsz": imgsz_of[name], "batch": args.batch, "device": str(device)}, csv_path)
    onnx = args.format == "onnx"
    todo = [v for v in variants if v.name not in done or (args.train and not done[v.name].get("metric"))
            or (onnx and not done[v.name].get("ort_latency_ms"))]
    if done:
        print(f"continuing {csv_path}: {len(variants) - len(todo)} of {len(variants)} variants already measured")
    by_hash = {r["shape_hash"]: r for r in done.values() if r.get("shape_hash") and not r.get("duplicate_of")}

    def ordered() -> list[dict[str, Any]]:
        extra = [r for n, r in done.items() if n not in names]  # rows of another sweep in the same folder: keep
        return [done[n] for n in names if n in done] + extra

    bar = tqdm(todo, desc="sweep", unit="variant", disable=not args.progress, dynamic_ncols=True)
    for variant in bar:
        bar.set_postfix_str(variant.name)
        imgsz = imgsz_of[variant.name]
        row: dict[str, Any] = {"variant": variant.name, "scale": variant.scale or "",
                               "overrides": " ".join(f"{k}={v}" for k, v in variant.settings),
                               "imgsz": imgsz, "batch": args.batch, "device": str(device)}
        model = Model(variant.cfg, scale=variant.scale, plugins=tuple(args.plugin))
        digest = signature_hash(model_signature(model, (imgsz, imgsz)))
        row["shape_hash"] = digest
        twin = by_hash.get(digest)
        if twin is not None and twin["variant"] != variant.name:
            tqdm.write(f"variant '{variant.name}' builds the same model as '{twin['variant']}' (same parameter shapes, "
                       f"{int(float(twin['params'])):,} params, imgsz {imgsz}): not measured again")
            keep = ("layers", "params", "gflops", "gflops_deploy", "latency_ms", "latency_p90_ms", "images_per_s",
                    "gflops_per_s", "ort_latency_ms", "ort_latency_p90_ms", "metric_name", "metric", "train_time_s", "train_dir")
            row.update({k: twin.get(k) for k in keep}, duplicate_of=twin["variant"])
        else:
            row.update(_measure(model, imgsz, args, device))
            if args.train:
                row.update(_train(variant, imgsz, args, run_dir))
            by_hash[digest] = row
        del model
        done[variant.name] = row
        write_csv(csv_path, ordered())
    bar.close()

    rows = ordered()
    print(format_table([r for r in rows if r["variant"] in imgsz_of], args.train, onnx))
    dups = [r for r in rows if r.get("duplicate_of")]
    if dups:
        print("identical variants (measured once): " + ", ".join(f"{r['variant']} = {r['duplicate_of']}" for r in dups))
    png = plot_sweep(rows, run_dir / "sweep.png", trained=args.train, title=Path(args.cfg).stem)
    print(f"results: {csv_path}  plot: {png}")
    return 0
