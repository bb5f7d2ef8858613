"""Summary: FLOPs at the real size including attention matmuls, n/a with a reason, totals."""
from __future__ import annotations

import torch

from zoo import Model
from zoo.summary import profile_rows

from zoo_test_paths import CFG


def _psa_only(c: int = 128) -> Model:
    return Model({"backbone": [[-1, 1, "Conv", [c, 1]], [-1, 1, "PSA", [c]]]})


def test_attention_row_matches_its_analytic_count():
    model = _psa_only(128)
    h = w = 40
    stats = profile_rows(model, (h, w))
    n, c = h * w, 128
    half = c // 2  # PSA attends over half the channels: 1 head of dim 64, key dim 32
    heads, head_dim, key_dim = 1, 64, 32
    macs = (
        n * c * c  # cv1 (1x1, c -> c)
        + n * c * c  # cv2 (1x1, c -> c)
        + n * half * (half + 2 * key_dim * heads)  # qkv
        + heads * n * n * key_dim  # q @ k^T
        + heads * n * n * head_dim  # attn @ v
        + n * half * 9  # depthwise positional conv
        + n * half * half  # proj
        + 2 * n * half * 2 * half  # ffn (two 1x1 convs)
    )
    assert abs(stats[1].gflops * 1e9 - 2 * macs) < 1e-6 * 2 * macs
    # the matmuls are a visible part of it: thop-style counting would miss them
    assert 2 * heads * n * n * (key_dim + head_dim) / (2 * macs) > 0.3


def test_flops_are_counted_at_the_real_size_not_extrapolated():
    model = Model(CFG / "yolov10n.yaml")
    small = sum(s.gflops for s in profile_rows(model, 320))
    large = sum(s.gflops for s in profile_rows(model, 640))
    # conv cost scales with pixels (x4); attention over 400 vs 100 tokens scales x16
    assert large > 4 * small


def test_rows_that_cannot_run_are_na_with_a_reason(capsys):
    model = Model(CFG / "yolov10n.yaml")
    result = model.info(imgsz=100)  # not a multiple of 32: the P4 concat cannot line up
    out = capsys.readouterr().out
    assert result["gflops"] is None
    assert "n/a" in out and "forward failed at 100x100" in out
    assert all(s.gflops is not None for s in result["rows"][:5])


def test_info_returns_totals_and_deploy_numbers(capsys):
    model = Model(CFG / "yolov10n.yaml")
    result = model.info(imgsz=(320, 256))
    assert result["params"] == 2_775_520 and result["gradients"] == 2_775_504
    assert result["layers"] == len(list(model.modules()))
    assert result["deploy"]["params"] < result["params"] and result["deploy"]["gflops"] < result["gflops"]
    out = capsys.readouterr().out
    assert "yolov10n (scale n) summary:" in out and "at 320x256" in out
    # the original model is untouched by the deploy profile
    assert model.head.cv2 is not None and model.model[0].bn is not None


def test_fused_cpu_attention_kernel_is_counted():
    """Equal head dims dispatch to the fused CPU kernel, which torch's counter alone misses."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(2, 4, 100, 32)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * 2 * 4 * 100 * 100 * (32 + 32)
