"""Multi-head attention with torch's parameter layout (``in_proj_weight``/``in_proj_bias``,
``out_proj``), so ``nn.MultiheadAttention`` checkpoints (RT-DETR's AIFI and decoder) load as they are;
query and key share one projection GEMM when they are one tensor."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.nn.common import attention
from zoo.nn.fast_cpu import linear, linear_act

__all__ = ["MultiheadAttention"]


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``torch.nn.MultiheadAttention``'s parameter layout
    (``in_proj_weight (3C, C)``, ``in_proj_bias (3C,)``, ``out_proj``), batch-first, computed with
    :func:`~zoo.nn.common.attention` (``F.scaled_dot_product_attention``).

    ``q, k: (B, Nq|Nk, C)``, ``v: (B, Nk, C)`` -> ``(B, Nq, C)``. ``mask``: bool ``(Nq, Nk)``, True = blocked.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        dim = self.in_proj_weight.shape[1]
        if q is k:  # self-attention with the positions on q and k: one GEMM for both projections
            q, k = linear(q, self.in_proj_weight[:2 * dim], self.in_proj_bias[:2 * dim]).chunk(2, -1)
        else:
            q = linear(q, self.in_proj_weight[:dim], self.in_proj_bias[:dim])
            k = linear(k, self.in_proj_weight[dim:2 * dim], self.in_proj_bias[dim:2 * dim])
        v = linear(v, self.in_proj_weight[2 * dim:], self.in_proj_bias[2 * dim:])
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        bias = None
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask, float("-inf"))
        if self.training and self.dropout > 0:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout)
        else:
            out = attention(q, k, v, bias)
        b, _, n, _ = out.shape
        return linear_act(out.transpose(1, 2).reshape(b, n, -1), self.out_proj)
