"""LocCa decoder: a transformer decoder that cross-attends to the unpooled image tokens and is
trained to produce captions, referring-expression boxes (ARef) and grounded captions (GCap).

Sequence layout (built by training.locca_targets): `tokens [B, L]` = task prefix (task token and
the condition: phrase for ARef, box tokens for GCap) followed by the target tokens, then padding.
Position i predicts tokens[i]; its input is tokens[i-1] (a learned BOS at i = 0), so both modes
below share one alignment:
- causal: teacher forcing with a causal mask;
- parallel prediction: every input that carries a target token is replaced by a learned mask
  embedding and the causal mask is dropped, so all target tokens are predicted at once from the
  image and the prefix alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.losses.cross_entropy import linear_cross_entropy
from training.models.blocks import DecoderBlock, key_padding_to_attn_mask
from training.models.config import DecoderConfig


class LocCaDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, vocab_size: int, memory_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.position_embedding = nn.Parameter(torch.empty(cfg.max_len, cfg.width))
        nn.init.normal_(self.position_embedding, std=0.01)
        self.bos_embedding = nn.Parameter(torch.zeros(cfg.width))
        self.mask_embedding = nn.Parameter(torch.zeros(cfg.width))
        nn.init.normal_(self.bos_embedding, std=0.02)
        nn.init.normal_(self.mask_embedding, std=0.02)
        self.memory_proj = (
            nn.Linear(memory_dim, cfg.width) if memory_dim != cfg.width else nn.Identity()
        )
        self.layers = nn.ModuleList(
            DecoderBlock(cfg.width, cfg.heads, cfg.mlp_dim, cfg.layer_norm_eps)
            for _ in range(cfg.depth)
        )
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        # Zero-initialised so the untrained decoder predicts a uniform distribution and its first
        # gradients do not disturb the image encoder.
        self.output = nn.Linear(cfg.width, vocab_size)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def decoder_inputs(self, tokens: Tensor, target_mask: Tensor, parallel: Tensor) -> Tensor:
        """[B, L, D] input embeddings: tokens shifted right behind a BOS, with target-carrying
        inputs replaced by the mask embedding in rows where `parallel` is True."""
        embedded = self.token_embedding(tokens)
        bos = self.bos_embedding.to(embedded.dtype).expand(tokens.shape[0], 1, -1)
        shifted = torch.cat([bos, embedded[:, :-1]], dim=1)
        carries_target = torch.cat(
            [torch.zeros_like(target_mask[:, :1]), target_mask[:, :-1]], dim=1
        )
        hide = carries_target & parallel[:, None]
        return torch.where(hide.unsqueeze(-1), self.mask_embedding.to(embedded.dtype), shifted)

    @staticmethod
    def self_attention_mask(valid: Tensor, parallel: Tensor) -> Tensor:
        """[B, 1, L, L] True where a query may attend to a key: real keys only; causal unless the
        row is in parallel-prediction mode."""
        length = valid.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
        per_row = causal[None] | parallel[:, None, None]
        # Padding queries keep their own position visible so no softmax row is empty.
        diagonal = torch.eye(length, dtype=torch.bool, device=valid.device)[None]
        return ((per_row & valid[:, None, :]) | diagonal)[:, None]

    def forward(
        self,
        memory: Tensor,
        tokens: Tensor,
        prefix_mask: Tensor,
        target_mask: Tensor,
        parallel: Tensor,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """Hidden states [B, L, D] after the final LayerNorm (before the vocabulary projection)."""
        length = tokens.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"decoder sequence length {length} exceeds max_len {self.cfg.max_len}")
        valid = prefix_mask | target_mask
        x = self.decoder_inputs(tokens, target_mask, parallel) + self.position_embedding[:length]
        memory = self.memory_proj(memory)
        self_mask = self.self_attention_mask(valid, parallel)
        cross_mask = key_padding_to_attn_mask(memory_mask)
        for layer in self.layers:
            x = layer(x, memory, self_mask, cross_mask)
        return self.final_layer_norm(x)

    def token_losses(
        self,
        memory: Tensor,
        tokens: Tensor,
        prefix_mask: Tensor,
        target_mask: Tensor,
        parallel: Tensor,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """Cross-entropy of every real target token, flattened in row-major order: [number of True
        entries in target_mask]. Rows without targets contribute nothing."""
        hidden = self(memory, tokens, prefix_mask, target_mask, parallel, memory_mask)
        return linear_cross_entropy(
            hidden[target_mask],
            self.output.weight,
            self.output.bias,
            tokens[target_mask],
            self.cfg.ce_chunk_size,
        )

    def logits(self, hidden: Tensor) -> Tensor:
        """Full-vocabulary logits, for decoding and evaluation (not for the training loss)."""
        return self.output(hidden)

    @torch.no_grad()
    def greedy_decode(
        self,
        memory: Tensor,
        prefixes: list[list[int]],
        steps: int,
        allowed: range | None = None,
        memory_mask: Tensor | None = None,
        increasing: dict[int, int] | None = None,
    ) -> list[list[int]]:
        """Causal greedy decoding of `steps` tokens after each row's prefix (e.g. the 4 box tokens
        of ARef), optionally restricted to token ids in `allowed`. `increasing` maps a step to an
        earlier one whose token it must exceed, unless that is the last allowed one (a box's
        x1 > x0: {2: 0, 3: 1}). One full decoder pass per step: targets are short, so a KV cache
        would not pay for its code."""
        batch = len(prefixes)
        lengths = torch.tensor([len(p) for p in prefixes], device=memory.device)
        total = int(lengths.max()) + steps
        tokens = torch.zeros(batch, total, dtype=torch.long, device=memory.device)
        prefix_mask = torch.zeros(batch, total, dtype=torch.bool, device=memory.device)
        for row, prefix in enumerate(prefixes):
            tokens[row, : len(prefix)] = torch.tensor(prefix, device=memory.device)
            prefix_mask[row, : len(prefix)] = True
        rows = torch.arange(batch, device=memory.device)
        causal = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        generated = torch.zeros_like(prefix_mask)
        for step in range(steps):
            position = lengths + step
            # The position being predicted counts as a (target) key so its query row is valid; its
            # own content never reaches it, since position i reads token i-1.
            generated[rows, position] = True
            hidden = self(memory, tokens, prefix_mask, generated, causal, memory_mask)
            logits = self.logits(hidden[rows, position]).float()
            if allowed is not None:
                blocked = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
                blocked[allowed.start : allowed.stop] = False
                logits = logits.masked_fill(blocked, float("-inf"))
            if increasing and step in increasing:
                # A near corner in the last bin leaves the far corner that bin.
                last = (allowed.stop if allowed is not None else logits.shape[-1]) - 1
                floor = tokens[rows, lengths + increasing[step]].clamp(max=last - 1)
                ids = torch.arange(logits.shape[-1], device=logits.device)
                logits = logits.masked_fill(ids[None, :] <= floor[:, None], float("-inf"))
            tokens[rows, position] = logits.argmax(dim=-1)
        return [
            tokens[row, len(prefixes[row]) : len(prefixes[row]) + steps].tolist()
            for row in range(batch)
        ]
