"""Two-way transformer of SAM's mask decoder.

Segment Anything, Kirillov et al., arXiv:2304.02643 (Sec. 3 and App. A, "Lightweight mask decoder").

Prompt tokens and image tokens update each other: every block runs token self-attention, tokens ->
image cross-attention, a token MLP, then image -> tokens cross-attention; a final tokens -> image
attention closes the stack. Cross-attention projects to ``dim // downsample_rate`` channels to save
compute on the (large) image side. Attribute names follow the segment-anything checkpoint layout
(``q_proj``/``k_proj``/``v_proj``/``out_proj``, ``norm1``..``norm4``, ``mlp.lin1``/``mlp.lin2``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.nn.common import attention
from zoo.nn.fast_cpu import linear_act

__all__ = ["ProjectedAttention", "TokenMLP", "TwoWayAttentionBlock", "TwoWayTransformer"]


class ProjectedAttention(nn.Module):
    """Multi-head attention whose q/k/v live in ``embed_dim // downsample_rate`` channels.

    ``q (B, Nq, C), k (B, Nk, C), v (B, Nk, C) -> (B, Nq, C)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        if downsample_rate < 1 or embed_dim % downsample_rate:
            raise ValueError(f"downsample_rate {downsample_rate} must be >= 1 and divide embed_dim {embed_dim}")
        self.embed_dim = embed_dim
        self.internal_dim = embed_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the attention width {self.internal_dim}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, self.internal_dim)
        self.k_proj = nn.Linear(embed_dim, self.internal_dim)
        self.v_proj = nn.Linear(embed_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embed_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, heads, N, D / heads)``."""
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(linear_act(q, self.q_proj))
        k = self._split_heads(linear_act(k, self.k_proj))
        v = self._split_heads(linear_act(v, self.v_proj))
        out = attention(q, k, v)  # (B, heads, Nq, D / heads), scale 1/sqrt(head dim)
        b, _, nq, _ = out.shape
        return linear_act(out.transpose(1, 2).reshape(b, nq, self.internal_dim), self.out_proj)


class TokenMLP(nn.Module):
    """``lin1 -> act -> lin2`` on the last dim: ``(..., C) -> (..., C)``."""

    def __init__(self, embed_dim: int, mlp_dim: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embed_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embed_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_act(linear_act(x, self.lin1, self.act), self.lin2)


class TwoWayAttentionBlock(nn.Module):
    """One block of the two-way transformer (post-norm residuals).

    ``queries (B, Nt, C), keys (B, HW, C), query_pe (B, Nt, C), key_pe (B, HW, C)`` ->
    updated ``(queries, keys)`` of the same shapes. The first block feeds the raw tokens (which
    already contain their positional encoding) to self-attention and replaces rather than adds
    to them, as the reference does.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int = 2048, act: type[nn.Module] = nn.ReLU,
                 downsample_rate: int = 2, skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = ProjectedAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn_token_to_image = ProjectedAttention(embed_dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = TokenMLP(embed_dim, mlp_dim, act)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.norm4 = nn.LayerNorm(embed_dim)
        self.cross_attn_image_to_token = ProjectedAttention(embed_dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        keys_with_pe = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys_with_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))

        # image tokens read the updated prompt tokens
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_with_pe, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks plus a final token -> image attention and LayerNorm.

    ``image_embedding (B, C, h, w), image_pe (B or 1, C, h, w), point_embedding (B, Nt, C)`` ->
    ``(tokens (B, Nt, C), image tokens (B, h*w, C))``.
    """

    def __init__(self, depth: int, embed_dim: int, num_heads: int, mlp_dim: int,
                 act: type[nn.Module] = nn.ReLU, downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embed_dim, num_heads, mlp_dim, act, downsample_rate, skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = ProjectedAttention(embed_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embed_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, h*w, C), made contiguous once here rather than by every projection that reads it
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).expand(keys.shape[0], -1, -1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn_out = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn_out), keys
