"""SigLIP 2 text tower: a bidirectional transformer over tokens with learned positions, pooled at
the last position. Texts are padded with the EOS id ("sticky EOS"), so the last position always
holds an EOS token that has attended to the whole caption; no attention mask is needed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.blocks import EncoderBlock
from training.models.config import TextConfig


class TextTower(nn.Module):
    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        # big_vision's init (SigLIP's reference): token and position embeddings ~ N(0, 1/width),
        # so a token's identity is as large in the residual stream as a block's output. With
        # 0.02 / 0.01 the tiny tower (width 64) started with every caption near one embedding.
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=cfg.width**-0.5)
        self.position_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        nn.init.normal_(self.position_embedding, std=cfg.width**-0.5)
        self.layers = nn.ModuleList(
            EncoderBlock(cfg.width, cfg.heads, cfg.mlp_dim, cfg.layer_norm_eps)
            for _ in range(cfg.depth)
        )
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.width, embed_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, L] (L ≤ context_length) → pooled text embedding [B, embed_dim]."""
        length = tokens.shape[1]
        if length > self.cfg.context_length:
            raise ValueError(
                f"text length {length} exceeds context length {self.cfg.context_length}"
            )
        x = self.token_embedding(tokens) + self.position_embedding[:length]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.final_layer_norm(x[:, -1]))
