"""Transformer building blocks shared by the vision tower, text tower, MAP head and LocCa decoder.

Attention always goes through F.scaled_dot_product_attention so the fused kernels are used on GPU;
padding and causality are expressed as one boolean "may attend" mask (True = attend).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def key_padding_to_attn_mask(key_mask: Tensor | None) -> Tensor | None:
    """[B, N] True-for-real-token mask → [B, 1, 1, N] mask broadcast over heads and queries."""
    if key_mask is None:
        return None
    return key_mask[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections (the SigLIP / HF parameter layout)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(
        self, queries: Tensor, keys_values: Tensor, attn_mask: Tensor | None = None
    ) -> Tensor:
        batch, q_len, width = queries.shape
        kv_len = keys_values.shape[1]
        head_dim = width // self.heads
        q = self.q_proj(queries).view(batch, q_len, self.heads, head_dim).transpose(1, 2)
        k = self.k_proj(keys_values).view(batch, kv_len, self.heads, head_dim).transpose(1, 2)
        v = self.v_proj(keys_values).view(batch, kv_len, self.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, q_len, width))


# An MLP's activation by name -> F.gelu's `approximate`. SigLIP uses the tanh approximation of
# GELU ("gelu_tanh", the default: released weights load exactly); "gelu" is the exact one.
ACTIVATIONS = {"gelu_tanh": "tanh", "gelu": "none"}


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str = "gelu_tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        self.approximate = ACTIVATIONS[activation]
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class RepeatedBlock(nn.Module):
    """A block that towers stack. With `activation_checkpointing` on (model.activation_checkpointing,
    set by training.distributed.set_block_options) a training forward keeps only the block's
    input and recomputes its activations in backward: same values and gradients, less memory,
    about one more forward of compute."""

    activation_checkpointing = False

    def forward(self, *args: Tensor | None) -> Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.block_forward, *args, use_reentrant=False)
        return self.block_forward(*args)

    def block_forward(self, *args: Tensor | None) -> Tensor:
        raise NotImplementedError


class EncoderBlock(RepeatedBlock):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(
        self, width: int, heads: int, mlp_dim: int, eps: float, activation: str = "gelu_tanh"
    ) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = MultiHeadAttention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_dim, activation)

    def block_forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        normed = self.layer_norm1(x)
        x = x + self.self_attn(normed, normed, attn_mask)
        return x + self.mlp(self.layer_norm2(x))


class DecoderBlock(RepeatedBlock):
    """Pre-LN decoder block: self-attention, cross-attention to image tokens, MLP."""

    def __init__(self, width: int, heads: int, mlp_dim: int, eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = MultiHeadAttention(width, heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.cross_attn = MultiHeadAttention(width, heads)
        self.layer_norm3 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_dim)

    def block_forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        normed = self.layer_norm1(x)
        x = x + self.self_attn(normed, normed, self_mask)
        x = x + self.cross_attn(self.layer_norm2(x), memory, memory_mask)
        return x + self.mlp(self.layer_norm3(x))


class MAPHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over the (unmasked) tokens."""

    def __init__(
        self, width: int, heads: int, mlp_dim: int, eps: float, activation: str = "gelu_tanh"
    ) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.probe, std=width**-0.5)
        self.attention = MultiHeadAttention(width, heads)
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_dim, activation)

    def forward(self, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        probe = self.probe.expand(tokens.shape[0], -1, -1)
        pooled = self.attention(probe, tokens, key_padding_to_attn_mask(token_mask))
        pooled = pooled + self.mlp(self.layernorm(pooled))
        return pooled[:, 0]
