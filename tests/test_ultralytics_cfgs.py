"""The shipped Ultralytics-family cfgs build with Ultralytics' exact parameter counts, and zoo's FLOP
counter (the per-row profile ``zoo info`` prints) lands within 3% of Ultralytics' GFLOPs.

Fast by building on the meta device: tensors there have shapes but no storage, so parameter counts
and FLOP counts (which depend only on shapes) cost no memory and no arithmetic.
"""
from __future__ import annotations

import pytest
import torch
import yaml

from zoo import Model
from zoo.config import CFG_DIR, resolve_spec
from zoo.summary import profile_rows

# Parameter counts per (cfg, scale), nc 80 for detection and 1000 for classification. Made with
# Ultralytics 8.4.190 in a separate environment: DetectionModel / ClassificationModel built from
# Ultralytics' own YAML of the same name at each scale, sum of numel() over model.parameters()
# (unfused). None: a file without scales.
ULTRALYTICS_PARAMS: dict[str, dict[str | None, int]] = {
    "yolov3": {None: 103_754_144},
    "yolov3-spp": {None: 104_803_744},
    "yolov3-tiny": {None: 12_173_248},
    "yolov5": {"n": 2_654_816, "s": 9_153_152, "m": 25_111_456, "l": 53_225_024, "x": 97_276_448},
    "yolov5-p6": {"n": 4_334_896, "s": 15_309_328, "m": 41_222_064, "l": 86_099_920, "x": 155_544_432},
    "yolov6": {"n": 4_500_080, "s": 16_452_192, "m": 52_020_496, "l": 110_926_464, "x": 173_061_616},
    "yolov8": {"n": 3_157_200, "s": 11_166_560, "m": 25_902_640, "l": 43_691_520, "x": 68_229_648},
    "yolov8-p2": {"n": 3_354_144, "s": 10_884_336, "m": 25_082_496, "l": 42_888_080, "x": 66_637_536},
    "yolov8-p6": {"n": 4_984_352, "s": 17_911_792, "m": 44_887_488, "l": 62_384_016, "x": 97_423_072},
    "yolov8-ghost": {"n": 1_865_316, "s": 5_960_072, "m": 10_336_312, "l": 14_277_872, "x": 22_229_308},
    "yolov8-ghost-p2": {"n": 2_033_944, "s": 5_562_080, "m": 9_031_728, "l": 12_214_448, "x": 18_664_776},
    "yolov8-ghost-p6": {"n": 2_901_100, "s": 9_520_008, "m": 18_002_904, "l": 21_227_584, "x": 33_057_852},
    "yolov8-rtdetr": {"n": 9_643_868, "s": 16_518_572, "m": 29_645_180, "l": 45_644_364, "x": 67_113_884},
    "yolov8-cls": {"n": 2_719_288, "s": 6_361_736, "m": 17_053_336, "l": 37_480_744, "x": 57_422_840},
    "yolov8-cls-resnet50": {"n": 27_413_032, "s": 27_413_032, "m": 27_413_032, "l": 27_413_032, "x": 27_413_032},
    "yolov8-cls-resnet101": {"n": 46_405_160, "s": 46_405_160, "m": 46_405_160, "l": 46_405_160, "x": 46_405_160},
    "yolov9t": {None: 2_128_720},
    "yolov9s": {None: 7_318_368},
    "yolov9m": {None: 20_216_160},
    "yolov9c": {None: 25_590_912},
    "yolov9e": {None: 58_206_592},
    "yolo11": {"n": 2_624_080, "s": 9_458_752, "m": 20_114_688, "l": 25_372_160, "x": 56_966_176},
    "yolo11-cls": {"n": 2_812_104, "s": 6_724_008, "m": 11_634_216, "l": 14_115_624, "x": 29_637_064},
    "yolo12": {"n": 2_602_288, "s": 9_284_096, "m": 20_199_168, "l": 26_450_784, "x": 59_210_784},
    "yolo12-cls": {"n": 2_999_496, "s": 7_385_512, "m": 13_261_608, "l": 16_737_160, "x": 35_351_112},
    "yolo26": {"n": 2_572_280, "s": 10_009_784, "m": 21_896_248, "l": 26_299_704, "x": 58_993_368},
    "yolo26-cls": {"n": 2_812_104, "s": 6_724_008, "m": 11_634_216, "l": 14_115_624, "x": 29_637_064},
    "yolo26-p2": {"n": 2_662_400, "s": 9_765_856, "m": 21_144_288, "l": 25_815_520, "x": 57_935_232},
    "yolo26-p6": {"n": 4_063_872, "s": 15_876_448, "m": 32_400_096, "l": 39_365_600, "x": 88_330_368},
}

# GFLOPs Ultralytics 8.4.190 reports (utils.torch_utils.get_flops, thop, unfused model) at 640 for
# detection and 224 for classification, for the smallest scale of a handful of families.
ULTRALYTICS_GFLOPS: dict[tuple[str, str | None], tuple[int, float]] = {
    ("yolov5", "n"): (640, 7.8388736),
    ("yolov8", "n"): (640, 8.8550912),
    ("yolov9t", None): (640, 8.4811264),
    ("yolo11", "n"): (640, 6.6733184),
    ("yolo12", "n"): (640, 7.6341376),
    ("yolo26", "n"): (640, 6.2396672),
    ("yolov8-cls", "n"): (224, 0.414030848),
    ("yolo11-cls", "n"): (224, 0.401769088),
}

CASES = [(stem, scale, count) for stem, scales in ULTRALYTICS_PARAMS.items() for scale, count in scales.items()]


def _meta_model(stem: str, scale: str | None) -> Model:
    with torch.device("meta"):
        return Model(stem, scale=scale)


@pytest.mark.parametrize("stem", list(ULTRALYTICS_PARAMS))
def test_table_covers_every_scale_of_the_shipped_cfg(stem):
    cfg = yaml.safe_load((CFG_DIR / f"{stem}.yaml").read_text())
    assert list(cfg.get("scales") or [None]) == list(ULTRALYTICS_PARAMS[stem])


@pytest.mark.parametrize(("stem", "scale", "expected"), CASES,
                         ids=[f"{stem}-{scale}" if scale else stem for stem, scale, _ in CASES])
def test_parameter_count_matches_ultralytics(stem, scale, expected):
    model = _meta_model(stem, scale)
    assert model.scale == scale
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize(("name", "stem", "scale"), [
    ("yolov8n", "yolov8", "n"), ("yolo11x-cls", "yolo11-cls", "x"), ("yolov8s-ghost-p6", "yolov8-ghost-p6", "s"),
    ("yolov8l-cls-resnet101", "yolov8-cls-resnet101", "l"), ("yolo26m-p2", "yolo26-p2", "m"),
    ("yolov9s", "yolov9s", None), ("yolov9e", "yolov9e", None), ("yolov3-tiny", "yolov3-tiny", None),
])
def test_ultralytics_model_names_resolve_to_the_family_file(name, stem, scale):
    spec = resolve_spec(name)
    assert spec.source == str(CFG_DIR / f"{stem}.yaml")
    assert spec.scale == scale


@pytest.mark.parametrize(("stem", "scale"), list(ULTRALYTICS_GFLOPS))
def test_gflops_within_3_percent_of_ultralytics(stem, scale):
    # on the meta device the NMS heads return no detections (nms_detections); NMS runs no convolution
    # or matmul, so a real forward counts the same (test_meta_flop_count_equals_a_real_forward)
    imgsz, expected = ULTRALYTICS_GFLOPS[(stem, scale)]
    rows = profile_rows(_meta_model(stem, scale), imgsz)
    assert all(row.gflops is not None for row in rows), [row.reason for row in rows if row.gflops is None]
    ratio = sum(row.gflops for row in rows) / expected
    # zoo counts convolutions, linears and matmuls but not BatchNorm (thop does): 0.97-0.99 measured
    assert 0.97 <= ratio <= 1.0, ratio


def test_meta_flop_count_equals_a_real_forward():
    """The meta-device shortcut above counts what a real forward counts."""
    real = profile_rows(Model("yolov8n-cls"), 224)
    meta = profile_rows(_meta_model("yolov8-cls", "n"), 224)
    assert [r.gflops for r in meta] == pytest.approx([r.gflops for r in real])


def test_plain_torch_layers_give_strides_without_a_trial_run():
    """YOLOv3-tiny (max-pool, zero-pad) and YOLOv6 (transposed conv) rows declare their strides, so
    their Detect heads get them at build time (on the meta device too, where no trial run can run)."""
    assert _meta_model("yolov3-tiny", None).model[-1].stride.shape == (2,)
    assert Model("yolov3-tiny").model[-1].stride.tolist() == [16.0, 32.0]
    assert Model("yolov6", scale="n").model[-1].stride.tolist() == [8.0, 16.0, 32.0]
