"""Side-by-side latency of zoo models against the reference implementations, same weights and inputs.

    python tools/bench_vs_reference.py --ref-python ../refenv/bin/python [--runs 10] [--only yolov10n,sam-encoder]

``--ref-python`` is the interpreter of the scratch environment made by ``../shared/tools/reference-env.sh``
(Ultralytics, timm, segment-anything on the CPU torch). This script re-runs itself under that interpreter
with the repository on ``sys.path``, so both sides share one process, one torch build and one thread
setting; the reference packages are never imported by ``zoo`` itself.

For every case the reference model's random weights (BatchNorm statistics made non-trivial) are copied
into the zoo model, both get the same input, and the outputs are compared (max abs difference) before
anything is timed. Timing: CPU, ``--threads`` threads (2), batch 1, fp32 unless a row says otherwise;
``--warmup`` untimed calls, then ``--runs`` timed calls per side, *interleaved* (zoo, reference,
reference, zoo, ...) so that load from other processes on a shared machine hits both sides alike;
the table reports medians. ratio = zoo ms / reference ms; the quartiles of the per-round ratios
show how much it moves within the run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling modules
from reference_pairs import (REPO, copy_weights, max_abs, mobile_sam_pair, rtdetr_pair,  # noqa: E402
                             rtdetr_ref_queries, rtdetr_zoo_queries, side_by_side_options, ultralytics_pair,
                             yolov10n_one2one_diff, yolov10n_pair)

CASES = ("yolov10n", "yolov10n-fuse-only", "yolov8n", "yolo11n", "rtdetr-l", "sam-encoder", "sam-box-decoder",
         "yolov10n-build", "yolov10n-train-step")


def relaunch_in_reference_env(ref_python: str, argv: list[str], script: str | Path = __file__) -> int:
    """Run ``script`` again under the reference interpreter, with the repo importable and
    ``--in-reference-env`` added (tools/bench_export.py reuses this)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    rest = [a for a in argv if a != "--ref-python" and a != ref_python]
    return subprocess.call([ref_python, str(Path(script).resolve()), "--in-reference-env", *rest], env=env)


# ----------------------------------------------------------------------------- timing
def interleaved_times(sides: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, list[float]]:
    """ms of every timed call, per side: ``warmup`` untimed rounds, then ``runs`` rounds that call
    each side once, the order rotated by one each round (two sides simply alternate) so that load
    from other processes hits every side alike and none always runs first."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides.items())
    for i in range(runs):
        shift = i % len(order)
        for name, fn in order[shift:] + order[:shift]:
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def ratio_quartiles(numerator: list[float], denominator: list[float]) -> tuple[float, float]:
    """q1 and q3 of the per-round ratios: how much a ratio itself moves while the machine's speed drifts."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return q1, q3


def interleaved(zoo_fn: Callable[[], Any], ref_fn: Callable[[], Any], runs: int,
                warmup: int) -> tuple[float, float, tuple[float, float]]:
    """Median ms of each side over ``runs`` interleaved calls, plus the quartiles of the per-round
    ratios (zoo / reference of the same round)."""
    times = interleaved_times({"zoo": zoo_fn, "ref": ref_fn}, runs, warmup)
    return (statistics.median(times["zoo"]), statistics.median(times["ref"]),
            ratio_quartiles(times["zoo"], times["ref"]))


# ----------------------------------------------------------------------------- cases
def case_yolov10n(opts: argparse.Namespace, deploy: bool = True) -> dict[str, Any]:
    import torch

    ref, zoo_model = yolov10n_pair()
    zoo_model.deploy() if deploy else zoo_model.fuse()
    zoo_model = apply_fast_paths(zoo_model, opts)
    x = torch.rand(1, 3, opts.imgsz, opts.imgsz)

    def run_zoo() -> Any:
        with torch.no_grad(), fast_context(opts):
            return zoo_model(x)  # (top-300 detections, raw): the head runs the reference's top-k itself

    def run_ref() -> Any:
        with torch.no_grad():
            return ref(x)

    diff = yolov10n_one2one_diff(run_zoo(), run_ref())
    zoo_ms, ref_ms, spread = interleaved(run_zoo, run_ref, opts.runs, opts.warmup)
    name = f"yolov10n {opts.imgsz} " + ("deploy vs fused" if deploy else "fuse only (both heads) vs fused")
    return dict(model=name, zoo=zoo_ms, ref=ref_ms, spread=spread, diff=diff)


def case_nms_detector(opts: argparse.Namespace, name: str) -> dict[str, Any]:
    """A YOLOv8/11 detector with NMS: zoo's deploy model (head + its NMS) vs Ultralytics' fused model +
    its ``non_max_suppression`` at the validation settings (conf 0.001, IoU 0.7, multi-label, 300)."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from zoo.data.shapes import ShapesConfig, render_shapes

    size = opts.imgsz
    # a rendered scene: calibrated on it, the random-weight detector's scores vary across the image
    image = render_shapes(ShapesConfig(size=(size, size)), "val", 0).image
    scene = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ref, zoo_model = ultralytics_pair(name, calibration=scene)
    zoo_model.deploy()
    zoo_model = apply_fast_paths(zoo_model, opts)
    x = scene

    def run_zoo() -> Any:
        with torch.no_grad(), fast_context(opts):
            return zoo_model(x)

    def run_ref() -> Any:
        with torch.no_grad():
            decoded = ref(x)[0]
            return decoded, non_max_suppression(decoded, 0.001, 0.7, multi_label=True, max_det=300)

    zoo_out, ref_out = run_zoo(), run_ref()
    diff = max_abs(zoo_out[1]["decoded"], ref_out[0])
    zoo_ms, ref_ms, spread = interleaved(run_zoo, run_ref, opts.runs, opts.warmup)
    kept = f"{int((zoo_out[0][0, :, 4] > 0).sum())} vs {len(ref_out[1][0])} detections kept"
    return dict(model=f"{name} {size} deploy + NMS vs fused + NMS", zoo=zoo_ms, ref=ref_ms, spread=spread, diff=diff,
                diff_note=f"decoded output; {kept}")


def case_rtdetr(opts: argparse.Namespace) -> dict[str, Any]:
    import torch

    ref, zoo_model = rtdetr_pair()
    zoo_model.fuse()
    zoo_model = apply_fast_paths(zoo_model, opts)
    x = torch.rand(1, 3, opts.imgsz, opts.imgsz)

    def run_zoo() -> Any:
        with torch.no_grad(), fast_context(opts):
            return rtdetr_zoo_queries(zoo_model(x))

    def run_ref() -> Any:
        with torch.no_grad():
            return rtdetr_ref_queries(ref(x))

    diff = max_abs(run_zoo(), run_ref())
    zoo_ms, ref_ms, spread = interleaved(run_zoo, run_ref, opts.runs, opts.warmup)
    return dict(model=f"rtdetr-l {opts.imgsz} fused", zoo=zoo_ms, ref=ref_ms, spread=spread, diff=diff)


def case_sam(opts: argparse.Namespace, part: str) -> dict[str, Any]:
    import torch

    ref, zoo_model = mobile_sam_pair()
    zoo_model = apply_fast_paths(zoo_model, opts)
    encoder_rows = list(zoo_model.model)[:-1]  # the cfg is a plain chain: TinyViT rows, then the neck
    head = zoo_model.model[-1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 1024, 1024, generator=g)

    def zoo_encode() -> Any:
        y = x.contiguous(memory_format=zoo_model.memory_format)
        with torch.no_grad(), fast_context(opts):
            for row in encoder_rows:
                y = row(y)
        return y.float()

    if part == "encoder":
        def run_ref() -> Any:
            with torch.no_grad():
                return ref.image_encoder(x)

        run_zoo = zoo_encode
        name = "MobileSAM image encoder 1024"
    else:
        with torch.no_grad():
            emb = ref.image_encoder(x)
        box = torch.tensor([[180.0, 240.0, 620.0, 700.0]])

        def run_ref() -> Any:
            with torch.no_grad():
                sparse, dense = ref.prompt_encoder(points=None, boxes=box, masks=None)
                masks, iou = ref.mask_decoder(emb, ref.prompt_encoder.get_dense_pe(), sparse, dense, False)
                return masks

        def run_zoo() -> Any:
            with torch.no_grad(), fast_context(opts):
                return head(emb, boxes=box, multimask_output=False)[0].float()

        name = "MobileSAM prompt enc + mask dec, 1 box"
    diff = max_abs(run_zoo(), run_ref())
    zoo_ms, ref_ms, spread = interleaved(run_zoo, run_ref, opts.runs, opts.warmup)
    return dict(model=name, zoo=zoo_ms, ref=ref_ms, spread=spread, diff=diff)


def case_build(opts: argparse.Namespace) -> dict[str, Any]:
    from ultralytics.nn.tasks import DetectionModel

    from zoo import Model

    cfg = REPO / "cfg" / "yolov10n.yaml"
    params: dict[str, int] = {}

    def run_zoo() -> None:
        params["zoo"] = sum(p.numel() for p in Model(cfg).parameters())

    def run_ref() -> None:
        params["ref"] = sum(p.numel() for p in DetectionModel("yolov10n.yaml", verbose=False).parameters())

    zoo_ms, ref_ms, spread = interleaved(run_zoo, run_ref, opts.runs, 1)
    return dict(model="yolov10n build (parse + init)", zoo=zoo_ms, ref=ref_ms, spread=spread,
                diff=float(abs(params["zoo"] - params["ref"])), diff_note="param count diff")


def case_train_step(opts: argparse.Namespace) -> dict[str, Any]:
    """forward + YOLOv10 loss (one-to-many top-10 + one-to-one top-1, box 7.5 / cls 0.5 / dfl 1.5)
    + backward + SGD step, batch 8 at 320. Ultralytics' loss is its E2EDetectLoss (the same sum of
    the two branch losses), which scales by the batch size; the diff column compares loss / batch."""
    import types

    import torch
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.loss import E2EDetectLoss

    from zoo import Model
    from zoo.engine.losses.yolo import YOLOv10Loss

    torch.manual_seed(0)
    ref = DetectionModel("yolov10n.yaml", verbose=False)
    zoo_model = Model(REPO / "cfg" / "yolov10n.yaml")
    copy_weights(ref, zoo_model)
    if opts.channels_last:  # zoo train --channels-last
        zoo_model.to_channels_last()
    ref.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    ref_loss = E2EDetectLoss(ref)
    zoo_loss = YOLOv10Loss(zoo_model.head)
    ref.train()
    zoo_model.train()
    b, s = 8, 320
    g = torch.Generator().manual_seed(0)
    img = torch.rand(b, 3, s, s, generator=g)
    n = 3 * b
    batch_idx = torch.arange(b).repeat_interleave(3)
    cls = torch.randint(0, 80, (n,), generator=g)
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    ref_batch = {"img": img, "batch_idx": batch_idx.float(), "cls": cls.float().view(-1, 1),
                 "bboxes": torch.cat((xy, wh), 1)}
    xyxy = torch.cat((xy - wh / 2, xy + wh / 2), 1) * s
    zoo_batch = {"img": img, "batch_idx": batch_idx, "cls": cls, "boxes": xyxy}
    opt_ref = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)
    opt_zoo = torch.optim.SGD([p for p in zoo_model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    losses: dict[str, float] = {}

    def run_zoo() -> None:
        opt_zoo.zero_grad(set_to_none=True)
        loss, _ = zoo_loss(zoo_model(img), zoo_batch)
        loss.backward()
        opt_zoo.step()
        losses.setdefault("zoo", float(loss.detach()))

    def run_ref() -> None:
        opt_ref.zero_grad(set_to_none=True)
        loss, _ = ref_loss(ref(img), ref_batch)
        loss = loss.sum()  # (box, cls, dfl) * batch; Ultralytics' trainer backpropagates the sum
        loss.backward()
        opt_ref.step()
        losses.setdefault("ref", float(loss.detach()) / b)

    run_zoo()
    run_ref()
    diff = abs(losses["zoo"] - losses["ref"])
    zoo_ms, ref_ms, spread = interleaved(run_zoo, run_ref, opts.runs, opts.warmup)
    return dict(model=f"yolov10n train step {s} b{b} (fwd+loss+bwd+SGD)", zoo=zoo_ms, ref=ref_ms, spread=spread,
                diff=diff,
                diff_note=f"loss diff (zoo {losses['zoo']:.4f}, ref/batch {losses['ref']:.4f})")


# ----------------------------------------------------------------------------- zoo fast paths
def apply_fast_paths(model: Any, opts: argparse.Namespace) -> Any:
    """Opt-in levers on the zoo side only (channels-last, torch.compile). The fused oneDNN
    conv/linear + activation calls are zoo's default for inference on CPU (``zoo.nn.fast_cpu``;
    ``--plain`` switches them off)."""
    import zoo.nn.fast_cpu

    # under bf16 autocast the plain ops must run (the fused oneDNN calls would stay fp32)
    zoo.nn.fast_cpu.ENABLED = not (opts.plain or opts.bf16)
    import torch

    if opts.channels_last:
        model.to_channels_last()
    if opts.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights are constants: lets inductor pre-pack them for oneDNN
        model = torch.compile(model)
    return model


def fast_context(opts: argparse.Namespace) -> Any:
    import contextlib

    import torch

    if opts.bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- main
def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    side_by_side_options(p, CASES, runs=10, threads=2, threads_help="torch intra-op threads")
    p.add_argument("--channels-last", action="store_true", help="zoo side: channels-last memory format")
    p.add_argument("--compile", action="store_true", help="zoo side: torch.compile")
    p.add_argument("--plain", action="store_true", help="zoo side: no fused oneDNN conv/linear+act calls")
    p.add_argument("--bf16", action="store_true", help="zoo side: bf16 autocast on CPU")
    args = p.parse_args(argv)
    if not args.in_reference_env:
        if not args.ref_python:
            p.error("--ref-python is required (the reference environment's interpreter)")
        return relaunch_in_reference_env(args.ref_python, argv)

    import torch

    torch.set_num_threads(args.threads)
    runners = {
        "yolov10n": lambda: case_yolov10n(args, deploy=True),
        "yolov10n-fuse-only": lambda: case_yolov10n(args, deploy=False),
        "yolov8n": lambda: case_nms_detector(args, "yolov8n"),
        "yolo11n": lambda: case_nms_detector(args, "yolo11n"),
        "rtdetr-l": lambda: case_rtdetr(args),
        "sam-encoder": lambda: case_sam(args, "encoder"),
        "sam-box-decoder": lambda: case_sam(args, "decoder"),
        "yolov10n-build": lambda: case_build(args),
        "yolov10n-train-step": lambda: case_train_step(args),
    }
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(wanted) - set(runners)
    if unknown:
        p.error(f"unknown case(s) {sorted(unknown)}; choose from {CASES}")
    flags = [f for f, on in (("channels-last", args.channels_last), ("compile", args.compile), ("bf16", args.bf16),
                             ("plain: fused oneDNN calls off", args.plain)) if on]
    print(f"machine: {machine()}")
    print(f"zoo fast paths: {', '.join(flags) or 'none'}; median of {args.runs} interleaved runs after {args.warmup} warm-up")
    print("| model | zoo ms | reference ms | ratio | per-round ratio q1-q3 | max abs output diff |")
    print("| --- | ---: | ---: | ---: | :---: | ---: |")
    for case in wanted:
        try:
            row = runners[case]()
        except Exception as exc:  # report and go on with the other cases
            print(f"| {case} | failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} | | | | |")
            continue
        note = f" ({row['diff_note']})" if "diff_note" in row else ""
        q1, q3 = row["spread"]
        print(f"| {row['model']} | {row['zoo']:.1f} | {row['ref']:.1f} | {row['zoo'] / row['ref']:.2f} | "
              f"{q1:.2f}-{q3:.2f} | {row['diff']:.2e}{note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
