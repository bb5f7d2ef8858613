"""One Conv -> norm -> act implementation behind Conv (Ultralytics), Conv2d_BN (TinyViT) and ConvBNAct
(MobileViT): the checkpoint layouts, padding rules and the fused path."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from zoo.nn.common import Conv
from zoo.nn.conv_norm_act import ConvNormAct
from zoo.nn.mobilevit_common import ConvBNAct
from zoo.nn.tiny_vit import Conv2d_BN


def _randomise_bn(module: ConvNormAct) -> None:
    g = torch.Generator().manual_seed(0)
    bn = module.bn
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("module, eps, momentum, act", [
    (Conv(4, 8, 3), 1e-3, 0.03, nn.SiLU),
    (Conv(4, 8, 3, act=False), 1e-3, 0.03, nn.Identity),
    (ConvBNAct(4, 8, 3), 1e-5, 0.1, nn.SiLU),
    (ConvBNAct(4, 8, 3, act=False), 1e-5, 0.1, nn.Identity),
    (Conv2d_BN(4, 8, 3), 1e-5, 0.1, type(None)),
])
def test_each_family_keeps_its_defaults_and_keys(module, eps, momentum, act) -> None:
    assert isinstance(module, ConvNormAct)
    assert (module.bn.eps, module.bn.momentum) == (eps, momentum)
    assert isinstance(module.act, act)
    assert set(module.state_dict()) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                        "bn.running_var", "bn.num_batches_tracked"}


def test_tinyvit_conv_registers_no_activation_module() -> None:
    names = [name for name, _ in Conv2d_BN(4, 8, 3).named_modules()]
    assert names == ["", "conv", "bn"]
    assert Conv2d_BN(4, 8, 1, bn_weight_init=0.0).bn.weight.abs().sum() == 0


def test_padding_rules() -> None:
    # Ultralytics pads (k - 1) // 2 (autopad); timm pads k // 2: the same for odd k, not for even k
    assert Conv(3, 3, 2).conv.padding == (0, 0)
    assert Conv2d_BN(3, 3, 2).conv.padding == (1, 1)
    assert ConvBNAct(3, 3, 2).conv.padding == (1, 1)
    assert Conv(3, 3, 3).conv.padding == Conv2d_BN(3, 3, 3).conv.padding == ConvBNAct(3, 3, 3).conv.padding


@pytest.mark.parametrize("make", [lambda: Conv(4, 8, 3, 2), lambda: ConvBNAct(4, 8, 3, g=4),
                                  lambda: Conv2d_BN(4, 8, 3)])
def test_fuse_keeps_the_output(make) -> None:
    module = make().eval()
    _randomise_bn(module)
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = module(x)
        then_gelu = module.then(nn.GELU(), x)
        module.fuse()
        module.fuse()  # idempotent
        assert module.bn is None and module.conv.bias is not None
        torch.testing.assert_close(module(x), plain, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(module.then(nn.GELU(), x), then_gelu, rtol=1e-4, atol=1e-5)


def test_other_norms_are_not_folded() -> None:
    module = ConvNormAct(4, 8, 3, norm=lambda c: nn.GroupNorm(1, c), act=nn.ReLU()).eval()
    x = torch.randn(1, 4, 5, 5)
    before = module(x)
    module.fuse()
    assert isinstance(module.bn, nn.GroupNorm)
    assert torch.equal(module(x), before)
