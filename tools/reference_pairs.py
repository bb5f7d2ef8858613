"""The reference models and the zoo's with the same weights, for the tools/ benchmarks that compare them
(``bench_vs_reference.py``: zoo eager vs reference eager; ``bench_export.py``: adds ONNX Runtime).

Every function imports Ultralytics lazily: this module is imported by those scripts before they
re-run themselves under the reference environment's interpreter, where Ultralytics is installed.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / ".." / "shared" / "fixtures"


def max_abs(a: Any, b: Any) -> float:
    """Max abs difference of two tensors, compared in float32."""
    return float((a.float() - b.float()).abs().max())


def roughen_norms(model: Any, seed: int = 0) -> None:
    """Give BatchNorm layers non-trivial statistics so that fusing them is actually tested."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def copy_weights(ref: Any, zoo_model: Any) -> None:
    """Load the reference state dict into the zoo model; keys and shapes must match one to one."""
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    own = {k for k in zoo_model.state_dict() if not k.endswith("num_batches_tracked")}
    missing, unexpected = own - set(sd), set(sd) - own
    if missing or unexpected:
        raise RuntimeError(f"state dicts differ: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    zoo_model.load_state_dict(sd, strict=False)


def calibrate_norms(model: Any, images: Any) -> None:
    """BatchNorm statistics = those of ``images`` (one train-mode pass): unlike random statistics
    they keep the feature maps varying across the image, so a random-weight detector's scores differ
    between anchors instead of tying (needed to compare top-k detections)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one pass sets the batch's statistics
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def yolov10n_pair(calibration: Any = None) -> tuple[Any, Any]:
    """Ultralytics' YOLOv10n (end-to-end, fused, eval) and the zoo's with the same weights (eval,
    not fused yet: the caller deploys, fuses or exports it first). BatchNorm statistics: random, or
    those of the ``calibration`` images when given (:func:`calibrate_norms`)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from zoo import Model

    torch.manual_seed(0)
    ref = DetectionModel("yolov10n.yaml", verbose=False)
    roughen_norms(ref)
    if calibration is not None:
        calibrate_norms(ref, calibration)
    zoo_model = Model(REPO / "cfg" / "yolov10n.yaml")
    copy_weights(ref, zoo_model)
    # End-to-end (NMS-free) inference on the reference too: its fuse() then drops the one-to-many
    # branch and its output is the top-k detections (B, 300, 6), the same work as zoo's deploy.
    ref.model[-1].end2end = True
    ref.eval().fuse(verbose=False)
    return ref, zoo_model.eval()


def ultralytics_pair(name: str, calibration: Any = None) -> tuple[Any, Any]:
    """Ultralytics' ``name`` (e.g. ``yolov8n``, ``yolo11n``; fused, eval) and zoo's shipped cfg of that name
    with the same weights (eval, not fused yet). BatchNorm statistics as in :func:`yolov10n_pair`."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from zoo import Model

    torch.manual_seed(0)
    ref = DetectionModel(f"{name}.yaml", verbose=False)
    roughen_norms(ref)
    if calibration is not None:
        calibrate_norms(ref, calibration)
    zoo_model = Model(name)
    copy_weights(ref, zoo_model)
    ref.eval().fuse(verbose=False)
    return ref, zoo_model.eval()


def yolov10n_one2one_diff(zoo_out: Any, ref_out: Any) -> float:
    """Max abs diff of the one-to-one head's raw maps (box distributions + class logits): with random
    weights many scores tie closely, so the top-k lists can differ in order without any real difference."""
    import torch

    zoo_raw = torch.cat([lvl.flatten(2) for lvl in zoo_out[1]["one2one"]], 2)
    ref_raw = ref_out[1]["one2one"]
    return max_abs(zoo_raw, torch.cat((ref_raw["boxes"], ref_raw["scores"]), 1))


def rtdetr_pair() -> tuple[Any, Any]:
    """Ultralytics' RT-DETR-l (fused, eval) and the zoo's with the same weights (eval, not fused yet)."""
    import torch
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from zoo import Model

    torch.manual_seed(0)
    ref = RTDETRDetectionModel("rtdetr-l.yaml", verbose=False)
    roughen_norms(ref)
    zoo_model = Model(REPO / "cfg" / "rtdetr-l.yaml")
    copy_weights(ref, zoo_model)
    ref.eval().fuse(verbose=False)
    return ref, zoo_model.eval()


def rtdetr_zoo_queries(zoo_out: Any) -> Any:
    """The zoo's last decoder layer as ``(B, Q, 4 + nc)``: boxes, then class probabilities."""
    import torch

    _, raw = zoo_out
    return torch.cat((raw["dec_bboxes"], raw["dec_scores"].sigmoid()), -1)


def rtdetr_ref_queries(ref_out: Any) -> Any:
    """The same from Ultralytics' eval output (the last decoder layer of ``(L, B, Q, 4 / nc)``)."""
    import torch

    _, (dec_bboxes, dec_scores, *_) = ref_out
    return torch.cat((dec_bboxes[-1], dec_scores[-1].sigmoid()), -1)


def mobile_sam_pair() -> tuple[Any, Any]:
    """Ultralytics' MobileSAM and the zoo's sam-tinyvit with the same weights (the fixture's random
    MobileSAM checkpoint if present, else the reference's own initialisation), via zoo's key map."""
    import torch
    from ultralytics.models.sam.build import build_mobile_sam

    from zoo import Model

    torch.manual_seed(0)
    ref = build_mobile_sam()
    path = FIXTURES / "mobile_sam" / "mobile_sam.pt"
    if path.exists():
        sd = {k: v.float() for k, v in torch.load(path, weights_only=True).items()}
        ref.load_state_dict(sd, strict=False)
    sd = ref.state_dict()
    zoo_model = Model(REPO / "cfg" / "sam-tinyvit.yaml")
    report = zoo_model.load(dict(sd), strict=False, verbose=False)
    if report.missing or report.mismatched:
        raise RuntimeError(f"MobileSAM weights did not map onto the zoo model: {report}")
    ref.eval()
    zoo_model.eval().fuse()
    return ref, zoo_model


def side_by_side_options(p: Any, cases: tuple[str, ...], runs: int, threads: int, threads_help: str) -> None:
    """The options every side-by-side script shares (``p`` an ``argparse.ArgumentParser``): the reference
    interpreter, the relaunch flag, the cases, timing rounds, threads and the detector input size."""
    p.add_argument("--ref-python", help="python of the reference environment (reference-env.sh)")
    p.add_argument("--in-reference-env", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", default=",".join(cases), help=f"comma-separated cases from {cases}")
    p.add_argument("--runs", type=int, default=runs)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=threads, help=threads_help)
    p.add_argument("--imgsz", type=int, default=640, help="detector input size")
