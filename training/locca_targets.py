"""LocCa targets: per example, up to three decoder sequences, each a task prefix and a target.

- caption: prefix [CAPTION]; target = caption tokens + EOS.
- aref (automatic referring expression): prefix [AREF] + phrase tokens; target = 4 box tokens.
- gcap (grounded captioning): prefix [GCAP] + 4 box tokens; target = phrase tokens + EOS.
A task without data (no caption, no usable box) has an empty prefix and target; its rows are
masked out of the loss, and batches keep static shapes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from training.tokenizer import TASKS, Tokenizer

BOX_TOKENS = 4


def usable_refs(refs: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, tuple[float, ...]]], int]:
    """(phrase, box) pairs with a non-empty phrase and a normalised xyxy box of positive area
    (coordinates clamped to [0, 1]), and the number of refs dropped as malformed."""
    kept: list[tuple[str, tuple[float, ...]]] = []
    dropped = 0
    for ref in refs:
        phrase = ref.get("phrase") if isinstance(ref, dict) else None
        box = ref.get("box") if isinstance(ref, dict) else None
        if not isinstance(phrase, str) or not phrase.strip() or not _is_box(box):
            dropped += 1
            continue
        x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)
        if x1 <= x0 or y1 <= y0:
            dropped += 1
            continue
        kept.append((phrase.strip(), (x0, y0, x1, y1)))
    return kept, dropped


def _is_box(box: Any) -> bool:
    return (
        isinstance(box, (list, tuple))
        and len(box) == 4
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
    )


def make_locca_example(
    tokenizer: Tokenizer,
    caption: str | None,
    refs: Sequence[dict[str, Any]],
    rng: random.Random,
    max_len: int = 64,
) -> dict[str, list[int]]:
    """Keys f"{task}_prefix" and f"{task}_target" for every task in TASKS (empty when missing).
    ARef and GCap each draw one usable ref with `rng`, independently. Every sequence fits
    `max_len` (targets are cut, keeping their EOS)."""
    example = {f"{task}_{part}": [] for task in TASKS for part in ("prefix", "target")}
    eos = tokenizer.eos_id
    if caption and caption.strip():
        prefix = [tokenizer.task_token("caption")]
        text = tokenizer.text_ids(caption)[: max_len - len(prefix) - 1]
        example["caption_prefix"], example["caption_target"] = prefix, text + [eos]
    kept, _ = usable_refs(refs)
    if kept:
        phrase, box = rng.choice(kept)
        phrase_ids = tokenizer.text_ids(phrase)[: max_len - 1 - BOX_TOKENS]
        example["aref_prefix"] = [tokenizer.task_token("aref")] + phrase_ids
        example["aref_target"] = tokenizer.box_tokens(box)

        phrase, box = rng.choice(kept)
        prefix = [tokenizer.task_token("gcap")] + tokenizer.box_tokens(box)
        phrase_ids = tokenizer.text_ids(phrase)[: max_len - len(prefix) - 1]
        example["gcap_prefix"], example["gcap_target"] = prefix, phrase_ids + [eos]
    return example


def collate_locca(examples: Sequence[dict[str, list[int]]], max_len: int = 64) -> dict[str, Tensor]:
    """Stack examples into fixed [B, max_len] tensors per task:
    f"locca_{task}_tokens" (prefix then target, zero padded), f"locca_{task}_prefix_mask" and
    f"locca_{task}_target_mask" (bool)."""
    batch = len(examples)
    out: dict[str, Tensor] = {}
    for task in TASKS:
        tokens = torch.zeros(batch, max_len, dtype=torch.long)
        prefix_mask = torch.zeros(batch, max_len, dtype=torch.bool)
        target_mask = torch.zeros(batch, max_len, dtype=torch.bool)
        for row, example in enumerate(examples):
            prefix, target = example[f"{task}_prefix"], example[f"{task}_target"]
            if len(prefix) + len(target) > max_len:
                raise ValueError(
                    f"example {row}: {task} sequence of {len(prefix) + len(target)} tokens exceeds max_len {max_len}"
                )
            if target and not prefix:
                raise ValueError(f"example {row}: {task} target without a task prefix")
            sequence = prefix + target
            tokens[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            prefix_mask[row, : len(prefix)] = True
            target_mask[row, len(prefix) : len(sequence)] = True
        out[f"locca_{task}_tokens"] = tokens
        out[f"locca_{task}_prefix_mask"] = prefix_mask
        out[f"locca_{task}_target_mask"] = target_mask
    return out


def decode_box(
    tokenizer: Tokenizer, token_ids: Sequence[int]
) -> tuple[float, float, float, float] | None:
    """The normalised (x0, y0, x1, y1) box an ARef prediction encodes, or None if it holds fewer
    than four box tokens."""
    return tokenizer.decode_box(token_ids)
