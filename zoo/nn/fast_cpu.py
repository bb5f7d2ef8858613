"""Inference fast paths on CPU: a conv or linear layer and the activation after it in one oneDNN call.

``act(conv(x))`` and ``act(linear(x))`` normally make two passes over the output (and, for convs, a
weight reorder per call). oneDNN can apply the activation as a post-op of the GEMM/conv while the
output is still in cache, and takes conv weights pre-packed into its blocked layout once. These are
the ``torch.ops.mkldnn`` kernels that ``torch.compile``'s CPU backend emits for the same patterns.

Used only where nothing needs them to be plain ops: no autograd, fp32 CPU tensors, outside FLOP
counting (a dispatch mode), ``torch.compile`` / ``torch.export`` tracing and ``torch.jit.trace`` (so
exported ONNX / TorchScript graphs never contain them). ``zoo.nn.fast_cpu.ENABLED = False`` switches
them off (the plain ``act(layer(x))`` path, which the tests compare against).
"""
from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode as _get_dispatch_mode

__all__ = ["ENABLED", "act_attr", "conv_act", "deconv_act", "linear", "linear_act", "usable"]

ENABLED = True
_MKLDNN = getattr(torch.ops, "mkldnn", None)
_CONV_POINTWISE = getattr(_MKLDNN, "_convolution_pointwise", None)
_REORDER_CONV_WEIGHT = getattr(_MKLDNN, "_reorder_convolution_weight", None)
_LINEAR_POINTWISE = getattr(_MKLDNN, "_linear_pointwise", None)
_DECONV_POINTWISE = getattr(_MKLDNN, "_convolution_transpose_pointwise", None)
_HAS_MKLDNN = torch.backends.mkldnn.is_available()

# conv module -> (weight identity, packed weight); weak keys so dropped modules free their copies,
# and nothing is added to the modules (state dicts, deepcopy and pickling stay as they were)
_PACKED: "weakref.WeakKeyDictionary[nn.Conv2d, tuple[tuple, torch.Tensor]]" = weakref.WeakKeyDictionary()
# the same for linear weights run as 1x1 convs, keyed by id(weight) (linear() gets no module, and a
# WeakKeyDictionary would compare tensors with ==); a finaliser drops the entry with the weight
_PACKED_LINEAR: dict[int, tuple[tuple, torch.Tensor]] = {}
# From this many rows on, a linear layer runs as a 1x1 conv over the rows (a channels-last view, no
# copy) with its weight pre-packed: oneDNN's 1x1-conv GEMM beats its linear kernel on tall inputs
# (8400 x 256 -> 256, RT-DETR's memory: 7.7 -> 6.9 ms) and ties on short ones (300 rows: 0.26 ms both)
CONV_GEMM_MIN_ROWS = 2048


def act_attr(act: nn.Module | None) -> tuple[str, str] | None:
    """oneDNN post-op ``(name, algorithm)`` for an activation module, ``None`` if it has none."""
    if act is None or isinstance(act, nn.Identity):
        return "none", ""
    if isinstance(act, nn.SiLU):
        return "swish", ""
    if isinstance(act, nn.ReLU):
        return "relu", ""
    if isinstance(act, nn.GELU):
        return "gelu", act.approximate  # "none" (erf) or "tanh", oneDNN's names too
    return None


def _capturing_graph() -> bool:
    """Whether the code runs to be recorded rather than computed: ``torch.compile``, ``torch.export``
    (and the dynamo ONNX exporter on it) or ``torch.jit.trace`` (and the TorchScript ONNX exporter).
    Two flag reads (~0.2 us); under dynamo the first is a constant and the second is never traced.
    (``zoo.nn.common.exporting`` is the layers' narrower test: export and tracing, not compile.)"""
    return torch.compiler.is_compiling() or torch._C._is_tracing()


def usable(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """Whether a fused oneDNN call may replace the plain ops for input ``x`` and these parameters
    (``None`` entries, e.g. a missing bias, are ignored)."""
    # checked first: under torch.compile this is a constant True and nothing after it is traced
    # (dynamo cannot trace the dispatch-mode query and would break the graph at every layer); under
    # export and tracing, exported graphs must hold plain ops only (no runtime has the mkldnn ones)
    if _capturing_graph():
        return False
    if not ENABLED or not _HAS_MKLDNN or x.device.type != "cpu" or x.dtype != torch.float32 or x.numel() == 0:
        return False
    weights = [w for w in params if w is not None]
    if any(w.dtype != torch.float32 for w in weights):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)):
        return False
    # FLOP counting (a dispatch mode) should see plain ops
    return _get_dispatch_mode() is None


def _weight_key(weight: torch.Tensor) -> tuple:
    """What identifies a weight's current values: storage, version, shape and strides."""
    # inference tensors (made under torch.inference_mode, e.g. by fuse()) keep no version counter
    version = -1 if weight.is_inference() else weight._version
    return weight.data_ptr(), version, tuple(weight.shape), weight.stride()


def _packed(cache: Any, slot: Any, weight: torch.Tensor, pack: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``pack(weight)``, remembered in ``cache[slot]`` until the weight's values change."""
    key = _weight_key(weight)
    cached = cache.get(slot)
    if cached is None or cached[0] != key:
        cached = (key, pack(weight.detach()))
        cache[slot] = cached
    return cached[1]


def _packed_conv_weight(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    if _REORDER_CONV_WEIGHT is None:
        return conv.weight
    return _packed(_PACKED, conv, conv.weight, lambda w: _REORDER_CONV_WEIGHT(
        w, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(x.shape)))


def _linear_as_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    attr: tuple[str, str]) -> torch.Tensor:
    """``(..., in) -> (..., out)`` as a 1x1 conv: the rows of a contiguous ``x`` are the pixels of a
    channels-last ``(1, in, rows, 1)`` map, and the conv's channels-last output is ``(rows, out)``."""
    k, n = x.shape[-1], weight.shape[0]
    rows = x.numel() // k
    if id(weight) not in _PACKED_LINEAR:
        weakref.finalize(weight, _PACKED_LINEAR.pop, id(weight), None)
    packed = _packed(_PACKED_LINEAR, id(weight), weight, lambda w: _REORDER_CONV_WEIGHT(
        w.reshape(n, k, 1, 1).contiguous(memory_format=torch.channels_last), [0, 0], [1, 1], [1, 1], 1,
        [1, k, rows, 1]))
    pixels = x.reshape(1, rows, 1, k).permute(0, 3, 1, 2)
    y = _CONV_POINTWISE(pixels, packed, bias, [0, 0], [1, 1], [1, 1], 1, attr[0], [], attr[1])
    return y.permute(0, 2, 3, 1).reshape(*x.shape[:-1], n)


def _then(act: nn.Module | None, y: torch.Tensor) -> torch.Tensor:
    """The plain path's activation step."""
    return y if act is None else act(y)


def conv_act(x: torch.Tensor, conv: nn.Conv2d, act: nn.Module | None = None) -> torch.Tensor:
    """``act(conv(x))``, as one oneDNN call when allowed. ``(B, c1, H, W) -> (B, c2, H', W')``.

    The fused call needs zero padding given as numbers (not ``"same"``).
    """
    attr = act_attr(act)
    if (not usable(x, conv.weight, conv.bias) or attr is None or _CONV_POINTWISE is None
            or conv.padding_mode != "zeros" or not isinstance(conv.padding, tuple) or x.dim() != 4):
        return _then(act, conv(x))
    return _CONV_POINTWISE(x, _packed_conv_weight(x, conv), conv.bias, list(conv.padding), list(conv.stride),
                           list(conv.dilation), conv.groups, attr[0], [], attr[1])


def deconv_act(x: torch.Tensor, deconv: nn.ConvTranspose2d, act: nn.Module | None = None) -> torch.Tensor:
    """``act(deconv(x))`` for a transposed conv, as one oneDNN call when allowed.
    ``(B, c1, H, W) -> (B, c2, H', W')``; an explicit ``output_size`` is not supported here."""
    attr = act_attr(act)
    if (not usable(x, deconv.weight, deconv.bias) or attr is None or _DECONV_POINTWISE is None
            or deconv.padding_mode != "zeros" or x.dim() != 4):
        return _then(act, deconv(x))
    return _DECONV_POINTWISE(x, deconv.weight, deconv.bias, list(deconv.padding), list(deconv.output_padding),
                             list(deconv.stride), list(deconv.dilation), deconv.groups, attr[0], [], attr[1])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           act: nn.Module | None = None) -> torch.Tensor:
    """``act(F.linear(x, weight, bias))``, as one oneDNN call when allowed. ``(..., in) -> (..., out)``."""
    attr = act_attr(act)
    if not usable(x, weight, bias) or attr is None or _LINEAR_POINTWISE is None or x.dim() < 2:
        return _then(act, F.linear(x, weight, bias))
    if (x.numel() >= CONV_GEMM_MIN_ROWS * x.shape[-1] and x.is_contiguous() and weight.dim() == 2
            and _CONV_POINTWISE is not None and _REORDER_CONV_WEIGHT is not None):
        return _linear_as_conv(x, weight, bias, attr)
    return _LINEAR_POINTWISE(x, weight, bias, attr[0], [], attr[1])


def linear_act(x: torch.Tensor, layer: nn.Linear, act: nn.Module | None = None) -> torch.Tensor:
    """``act(layer(x))`` for an ``nn.Linear``, as one oneDNN call when allowed (see :func:`linear`)."""
    return linear(x, layer.weight, layer.bias, act)
