"""Exported ONNX graphs on ONNX Runtime against zoo eager and Ultralytics eager: same weights, one process.

    python tools/bench_export.py --ref-python ../refenv/bin/python [--runs 12] [--threads 1]
        [--only yolov10n,rtdetr-l,sam-encoder,sam-decoder]
    python tools/bench_export.py --dynamo [--dynamic]     # exporter comparison, this interpreter

Like ``tools/bench_vs_reference.py`` (whose timing helpers it imports; the model pairs come from
``tools/reference_pairs.py``) it re-runs itself under the reference environment's interpreter
(Ultralytics, with onnx and onnxruntime installed there too) so all three sides share one process,
one torch build and one thread setting. Per case:

1. the reference model's random weights go into the zoo model: RT-DETR with BatchNorm statistics
   made non-trivial; YOLOv10n with those of two rendered shapes images (random statistics leave every
   score at the bias' sigmoid, so top-300 rows could not be paired); MobileSAM (Ultralytics'
   ``build_mobile_sam``) with the fixture checkpoint in ../shared/fixtures when present;
2. zoo's export of it to ONNX is timed (``export_model``: deployed copy, trace, write; SAM: the two
   graphs of ``export_sam_timed``, 1 mask out) and the file size noted;
3. ONNX Runtime's output is compared with zoo eager's and the reference's (max abs difference;
   top-k detections after pairing rows whose scores tie, see ``matched_max_diff``; zoo vs
   reference as bench_vs_reference compares them);
4. ``--warmup`` untimed rounds, then ``--runs`` interleaved rounds, each calling ONNX Runtime (CPU
   provider), zoo eager (deployed or fused, the oneDNN fast paths on, channels-last unless
   ``--no-channels-last``) and the reference eager model once, the order rotated every round so
   that load from other processes hits all three alike. Medians, the ratios of medians and the
   quartiles of the per-round ratios.

Threads: ``--threads`` (1) for torch and ONNX Runtime's intra-op pool alike; on a small machine
shared with other jobs 1 thread is the steadier measure. Batch 1, fp32.

``--dynamo``: instead of the above, time torch's dynamo exporter (``torch.onnx.export(dynamo=True)``,
needs onnxscript) against zoo's TorchScript-based one on YOLOv10n (same graph and axes; ``--dynamic``
frees batch, height and width) and compare the two files' ONNX Runtime outputs. Runs in this
interpreter, without the reference.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling modules
from bench_vs_reference import (apply_fast_paths, fast_context, interleaved_times, machine,  # noqa: E402
                                ratio_quartiles, relaunch_in_reference_env)
from reference_pairs import (REPO, calibrate_norms, max_abs, mobile_sam_pair, rtdetr_pair,  # noqa: E402
                             rtdetr_ref_queries, rtdetr_zoo_queries, side_by_side_options, yolov10n_one2one_diff,
                             yolov10n_pair)

CASES = ("yolov10n", "rtdetr-l", "sam-encoder", "sam-decoder")
SIDES = ("ort", "zoo", "ref")
SAM_BOX = (180.0, 240.0, 620.0, 700.0)  # x1, y1, x2, y2 in the 1024 input frame, as bench_vs_reference


def matched_max_diff(got: np.ndarray, expected: np.ndarray, tie: float = 1e-4) -> tuple[float, int]:
    """Max abs difference between detection rows ``(B, K, 6)`` after pairing each row of ``got`` with
    the closest unused row of ``expected`` of the same class and a score within ``tie`` (random
    weights give scores that tie to many digits, which may sort either way); also how many rows sat
    at another position."""
    worst, moved = 0.0, 0
    for image_got, image_expected in zip(got, expected):
        unused = np.ones(len(image_expected), bool)
        for k, row in enumerate(image_got):
            same = (image_expected[:, 5] == row[5]) & (np.abs(image_expected[:, 4] - row[4]) <= tie)
            candidates = unused & same
            if not candidates.any():
                continue  # a tie at the K-th score: its twin was kept instead
            diffs = np.where(candidates, np.abs(image_expected - row).max(-1), np.inf)
            best = int(diffs.argmin())
            unused[best] = False
            worst = max(worst, float(diffs[best]))
            moved += best != k
    return worst, moved


def shapes_images(n: int, size: int) -> Any:
    """``n`` rendered shapes images ``(n, 3, size, size)`` in 0..1: structure for the detectors' features."""
    import torch

    from zoo.data.shapes import ShapesConfig, render_shapes

    images = [render_shapes(ShapesConfig(size=(size, size)), "val", i).image for i in range(n)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def ort_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (``zoo.export.OnnxModel`` takes
    no session options, so it would use the runtime's default pool, one thread per core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def no_grad_call(fn: Callable[[], Any], opts: argparse.Namespace | None = None) -> Callable[[], Any]:
    """``fn`` under ``torch.no_grad`` (and the zoo side's autocast setting when ``opts`` is given)."""
    import contextlib

    import torch

    def call() -> Any:
        with torch.no_grad(), (fast_context(opts) if opts is not None else contextlib.nullcontext()):
            return fn()
    return call


def timed_export(export: Callable[[], Path]) -> tuple[Path, float]:
    start = time.perf_counter()
    path = export()
    return path, time.perf_counter() - start


# ----------------------------------------------------------------------------- cases
def case_detector(opts: argparse.Namespace, out: Path, name: str) -> dict[str, Any]:
    """yolov10n (zoo deploy vs the reference fused, end to end) or rtdetr-l (both fused)."""
    from zoo.export import export_model

    # YOLOv10n: BatchNorm statistics from shapes images, or every random-weight score ties and the
    # top-300 rows of two runtimes cannot be compared (RT-DETR's query scores do not tie)
    images = shapes_images(2, opts.imgsz)
    ref, zoo_model = yolov10n_pair(images) if name == "yolov10n" else rtdetr_pair()
    path, seconds = timed_export(lambda: export_model(zoo_model, "onnx", imgsz=opts.imgsz, file=out / f"{name}.onnx"))
    zoo_model.deploy()  # for RT-DETR the same as fuse(): no training-only branch
    zoo_model = apply_fast_paths(zoo_model, opts)
    session = ort_session(path, opts.threads)
    x = images[:1].contiguous()
    feed = {session.get_inputs()[0].name: x.numpy()}
    sides = {"ort": lambda: session.run(None, feed), "zoo": no_grad_call(lambda: zoo_model(x), opts),
             "ref": no_grad_call(lambda: ref(x))}
    ort_out, zoo_out, ref_out = (sides[s]() for s in SIDES)
    ort_det = ort_out[0]
    ort_zoo, moved = matched_max_diff(ort_det, zoo_out[0].float().numpy())
    if name == "yolov10n":
        zoo_ref = yolov10n_one2one_diff(zoo_out, ref_out)
        ort_ref = f"{matched_max_diff(ort_det, ref_out[0].float().numpy())[0]:.2e}"
        label = f"yolov10n {opts.imgsz} deploy (ref: fused, end2end)"
    else:
        zoo_ref = max_abs(rtdetr_zoo_queries(zoo_out), rtdetr_ref_queries(ref_out))
        ort_ref = "–"  # the reference returns per-query class scores, not top-k detection rows
        label = f"rtdetr-l {opts.imgsz} fused"
    return dict(model=label, export=f"{seconds:.1f}", mb=path.stat().st_size / 1e6,
                times=interleaved_times(sides, opts.runs, opts.warmup),
                diffs=(f"{ort_zoo:.2e}", f"{zoo_ref:.2e}", ort_ref), moved=moved)


def sam_setup(opts: argparse.Namespace, out: Path, cache: dict[str, Any]) -> dict[str, Any]:
    """The MobileSAM pair (bench_vs_reference's) and zoo's two exported graphs, made once for both cases."""
    if not cache:
        from zoo.export.sam import export_sam_timed

        ref, zoo_model = mobile_sam_pair()
        written = export_sam_timed(zoo_model, out / "mobile_sam", multimask_output=False)
        cache.update(ref=ref, zoo=apply_fast_paths(zoo_model, opts), written=written)
    return cache


def case_sam(opts: argparse.Namespace, out: Path, part: str, cache: dict[str, Any]) -> dict[str, Any]:
    import torch

    from zoo.export.sam import prompt_arrays

    setup = sam_setup(opts, out, cache)
    ref, zoo_model, written = setup["ref"], setup["zoo"], setup["written"]
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    if part == "encoder":
        path, seconds = written.encoder, written.encoder_seconds
        session = ort_session(path, opts.threads)
        feed = {"images": x.numpy()}
        rows = list(zoo_model.model)[:-1]  # TinyViT rows, then the neck: everything before the head

        def zoo_encode() -> Any:
            y = x.contiguous(memory_format=zoo_model.memory_format)  # as bench_vs_reference times it
            for row in rows:
                y = row(y)
            return y

        sides = {"ort": lambda: session.run(None, feed), "zoo": no_grad_call(zoo_encode, opts),
                 "ref": no_grad_call(lambda: ref.image_encoder(x))}
        ort_out, zoo_out, ref_out = (sides[s]() for s in SIDES)
        got, zoo_value, ref_value = torch.from_numpy(ort_out[0]), zoo_out.float(), ref_out
        label = "MobileSAM image encoder 1024"
    else:
        path, seconds = written.decoder, written.decoder_seconds
        session = ort_session(path, opts.threads)
        with torch.no_grad():
            emb = ref.image_encoder(x)
        box = torch.tensor([SAM_BOX])
        coords, labels = prompt_arrays(box=box[0])
        feed = {"image_embeddings": emb.numpy(), "point_coords": coords, "point_labels": labels,
                "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32)}
        head = zoo_model.model[-1]

        def ref_decode() -> Any:
            sparse, dense = ref.prompt_encoder(points=None, boxes=box, masks=None)
            return ref.mask_decoder(emb, ref.prompt_encoder.get_dense_pe(), sparse, dense, False)[0]

        sides = {"ort": lambda: session.run(None, feed),
                 "zoo": no_grad_call(lambda: head(emb, boxes=box, multimask_output=False)[0], opts),
                 "ref": no_grad_call(ref_decode)}
        ort_out, zoo_out, ref_out = (sides[s]() for s in SIDES)
        got, zoo_value, ref_value = torch.from_numpy(ort_out[0]), zoo_out.float(), ref_out
        label = "MobileSAM prompt enc + mask dec, 1 box"
    diffs = (max_abs(got, zoo_value), max_abs(zoo_value, ref_value), max_abs(got, ref_value))
    return dict(model=label, export=f"{seconds:.1f}", mb=path.stat().st_size / 1e6,
                times=interleaved_times(sides, opts.runs, opts.warmup), diffs=tuple(f"{d:.2e}" for d in diffs))


# ----------------------------------------------------------------------------- report
def ratio_cell(times: dict[str, list[float]], top: str, bottom: str) -> str:
    q1, q3 = ratio_quartiles(times[top], times[bottom])
    return f"{statistics.median(times[top]) / statistics.median(times[bottom]):.2f} ({q1:.2f}-{q3:.2f})"


def table_row(row: dict[str, Any]) -> str:
    times = row["times"]
    ms = [statistics.median(times[s]) for s in SIDES]
    moved = f" ({row['moved']} tied rows reordered)" if row.get("moved") else ""
    return (f"| {row['model']} | {row['export']} | {row['mb']:.1f} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | "
            f"{ratio_cell(times, 'ort', 'zoo')} | {ratio_cell(times, 'ort', 'ref')} | {ratio_cell(times, 'zoo', 'ref')} | "
            f"{' / '.join(row['diffs'])}{moved} |")


def benchmark(opts: argparse.Namespace, wanted: list[str]) -> int:
    import onnxruntime
    import torch

    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    print(f"machine: {machine()}, onnxruntime {onnxruntime.__version__} ({opts.threads} intra-op threads)")
    print(f"zoo eager: oneDNN fast paths on, {'channels-last' if opts.channels_last else 'contiguous'}; "
          f"batch 1 fp32; median of {opts.runs} interleaved rounds after {opts.warmup} warm-up; "
          "ratio of medians (per-round q1-q3)")
    print("| model | export s | MB | ORT ms | zoo ms | reference ms | ORT/zoo | ORT/ref | zoo/ref | "
          "max abs diff ORT-zoo / zoo-ref / ORT-ref |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | :---: | :---: | :---: | --- |")
    sam_cache: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        out = opts.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for case in wanted:
            try:
                if case.startswith("sam-"):
                    row = case_sam(opts, out, case.removeprefix("sam-"), sam_cache)
                else:
                    row = case_detector(opts, out, case)
            except Exception as exc:  # report and go on with the other cases
                print(f"| {case} | failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]} |", flush=True)
                continue
            print(table_row(row), flush=True)
    return 0


def dynamo_comparison(opts: argparse.Namespace) -> int:
    """zoo's exporter vs torch's dynamo exporter on the same YOLOv10n graph (see the module doc)."""
    import torch

    from zoo import Model
    from zoo.export import export_model
    from zoo.export.graphs import ExportGraph, deployed_copy

    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    model = Model(REPO / "cfg" / "yolov10n.yaml")
    images = shapes_images(2, opts.imgsz)
    calibrate_norms(model, images)  # as in the benchmark: scores that do not tie
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        out = opts.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        path, seconds = timed_export(lambda: export_model(model, "onnx", imgsz=opts.imgsz, dynamic=opts.dynamic,
                                                          file=out / "yolov10n.onnx"))
        graph = ExportGraph(deployed_copy(model), "detect", model.model[-1].max_det).eval()
        x = images[:1].contiguous()
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "detections": {0: "batch"}} if opts.dynamic else None
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (x,), str(out / "dynamo.onnx"), dynamo=True, verbose=False,
                              input_names=["images"], output_names=["detections"], dynamic_axes=axes)
        dynamo_seconds = time.perf_counter() - start
        outputs = [ort_session(p, opts.threads).run(None, {"images": x.numpy()})[0] for p in (path, out / "dynamo.onnx")]
    diff, _ = matched_max_diff(outputs[1], outputs[0])
    print(f"yolov10n {opts.imgsz}{' dynamic' if opts.dynamic else ''}: zoo exporter {seconds:.1f} s, dynamo exporter "
          f"{dynamo_seconds:.1f} s ({dynamo_seconds / seconds:.1f}x); max abs diff of their ORT outputs {diff:.2e}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    side_by_side_options(p, CASES, runs=12, threads=1, threads_help="torch and ONNX Runtime intra-op threads")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="zoo eager side: channels-last memory format (default on)")
    p.add_argument("--out", type=Path, help="folder to keep the exported files in (default: a temporary one)")
    p.add_argument("--dynamo", action="store_true", help="compare torch's dynamo exporter instead (see above)")
    p.add_argument("--dynamic", action="store_true", help="with --dynamo: batch, height and width free")
    args = p.parse_args(argv)
    args.compile = args.plain = args.bf16 = False  # bench_vs_reference's zoo-side levers, all off here
    if args.dynamo:
        return dynamo_comparison(args)
    if not args.in_reference_env:
        if not args.ref_python:
            p.error("--ref-python is required (the reference environment's interpreter)")
        return relaunch_in_reference_env(args.ref_python, argv, __file__)
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(wanted) - set(CASES)
    if unknown:
        p.error(f"unknown case(s) {sorted(unknown)}; choose from {CASES}")
    return benchmark(args, wanted)


if __name__ == "__main__":
    sys.exit(main())
