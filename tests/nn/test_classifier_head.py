"""ClassifierHead head: shapes, options, wiring (width scaling, errors), fusing."""
from __future__ import annotations

import pytest
import torch

from zoo import ConfigError, Model
from zoo.nn.classifier_head import ClassifierHead


def _cfg(head_args: list, width: float = 1.0) -> dict:
    return {
        "nc": 10,
        "scales": {"a": [1.0, width, 1024]},
        "backbone": [[-1, 1, "Conv", [32, 3, 2]]],
        "head": [[-1, 1, "ClassifierHead", head_args]],
    }


def test_logits_shape_and_task() -> None:
    head = ClassifierHead(32, 7).eval()
    assert head.task == "classify" and head.out_channels == 7
    assert head(torch.randn(3, 32, 5, 9)).shape == (3, 7)
    assert head.expand is None and head.norm is None


def test_expansion_and_norm_options() -> None:
    head = ClassifierHead(32, 7, expand=48, norm=True).eval()
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        feats = head.features(x)
        assert feats.shape == (2, 48, 6, 6)
        pooled = torch.nn.functional.layer_norm(feats.mean((2, 3)), (48,), head.norm.weight, head.norm.bias, 1e-5)
        assert torch.allclose(head(x), head.fc(pooled), atol=1e-6)
    assert head.expand.bn.eps == 1e-5  # the timm families' BatchNorm, not Ultralytics' 1e-3


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    head = ClassifierHead(16, 4, dropout=0.5)
    x = torch.randn(4, 16, 3, 3)
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    assert not torch.equal(head(x), head(x))


def test_wiring_scales_the_expansion_not_the_class_count() -> None:
    model = Model(_cfg(["nc", 64], width=0.5))
    head = model.model[1]
    assert head.expand.conv.in_channels == 16 and head.expand.conv.out_channels == 32
    assert head.fc.out_features == 10 and model.records[1].out_channels == 10
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("args,message", [
    (["ten"], "class count"),
    (["nc", -4], "expand must be >= 0"),
    (["nc", 0, False, 1.5], "dropout must be in"),
])
def test_bad_args_name_the_row(args: list, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Model(_cfg(args))
    assert "row 1" in str(err.value) and message in str(err.value)


def test_fuse_keeps_outputs_and_is_idempotent() -> None:
    torch.manual_seed(0)
    model = Model(_cfg(["nc", 64, True])).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 3, 32, 32)
        before = model(x)
        model.fuse()
        model.fuse()
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert (before - after).abs().max() < 1e-5
