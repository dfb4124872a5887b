"""Phase 3 (NaFlex) batches: native aspect ratio, a sequence length drawn per step.

Each step draws one sequence length L from a list (seeded by run seed and step alone, so every
rank and every resume draws the same one). Each image is resized, keeping its aspect ratio, to
the largest grid of whole patches with rows × cols ≤ L, cut into patches, and padded to L; the
batch carries `patches [B, L, p·p·3]`, `patch_coords [B, L, 2]` (row, col) and `patch_mask [B, L]`
(True for real patches), which the vision tower reads with padding masked out.

Memory stays bounded by a token budget: a step of length L takes min(batch_size, budget // L)
samples, so no step holds more patches per rank than the budget (by default phase 1's).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from training.data.samples import to_tensor
from training.models.vision import patchify

SIGLIP2_SEQ_LENS = (128, 256, 576, 784, 1024)  # for 256 patches (16 x 16) in phase 1


@dataclass(frozen=True)
class NaFlexSchedule:
    start_step: int  # the first phase-3 step
    seq_lens: tuple[int, ...]
    token_budget: int  # patches per rank per step
    seed: int

    @classmethod
    def build(
        cls,
        start_step: int,
        seed: int,
        batch_size: int,
        phase1_patches: int,
        seq_lens: Sequence[int] | None = None,
        token_budget: int | None = None,
    ) -> NaFlexSchedule:
        """Defaults: SigLIP 2's lengths scaled by phase1_patches / 256, and a budget of
        batch_size × phase1_patches, raised to 2 samples of the longest length. Raises
        ValueError if a given budget leaves fewer than 2 samples per batch at the longest length
        (the sigmoid loss needs negatives)."""
        lengths = tuple(
            seq_lens
            or sorted({max(1, round(length * phase1_patches / 256)) for length in SIGLIP2_SEQ_LENS})
        )
        budget = token_budget or max(batch_size * phase1_patches, 2 * max(lengths))
        schedule = cls(start_step, lengths, budget, seed)
        if schedule.batch_size(max(lengths), batch_size) < 2:
            raise ValueError(
                f"naflex_token_budget={schedule.token_budget} leaves fewer than 2 "
                f"samples per batch at sequence length {max(lengths)}"
            )
        return schedule

    def seq_len(self, step: int) -> int | None:
        """The step's sequence length, or None before phase 3."""
        if step < self.start_step:
            return None
        return random.Random(f"{self.seed}/naflex/{step}").choice(self.seq_lens)

    def batch_size(self, seq_len: int, batch_size: int) -> int:
        return max(1, min(batch_size, self.token_budget // seq_len))


def patch_grid(height: int, width: int, patch: int, seq_len: int) -> tuple[int, int]:
    """(rows, cols) of the largest patch grid with rows × cols ≤ seq_len whose shape follows the
    image's: the grid at the largest scale s with floor(h·s/p) · floor(w·s/p) ≤ seq_len (each
    side at least 1 and at most seq_len patches, for extreme aspect ratios)."""
    if seq_len < 1:
        raise ValueError(f"sequence length must be positive, got {seq_len}")

    def grid(scale: float) -> tuple[int, int]:
        return (
            min(seq_len, max(1, math.floor(height * scale / patch))),
            min(seq_len, max(1, math.floor(width * scale / patch))),
        )

    # Without the clamps, this scale gives exactly seq_len patches before rounding down; with
    # them the product stays <= seq_len too (a side clamped to 1 leaves the other <= seq_len).
    rows, cols = grid(patch * math.sqrt(seq_len / (height * width)))
    while True:  # step to the next scale where a side gains a patch, while the grid still fits
        scale = min((rows + 1) * patch / height, (cols + 1) * patch / width)
        bigger = grid(scale)
        if bigger[0] * bigger[1] > seq_len or bigger == (rows, cols):
            return rows, cols
        rows, cols = bigger


def naflex_patches(
    image: Image.Image, patch: int, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize `image` to its patch grid within `seq_len` and patchify: patches [L, p·p·3] in
    [-1, 1], coords [L, 2] (row, col) and mask [L], padded with zeros (mask False) to L."""
    width, height = image.size
    rows, cols = patch_grid(height, width, patch, seq_len)
    resized = to_tensor(image.resize((cols * patch, rows * patch), Image.Resampling.BILINEAR))
    real_patches, real_coords = patchify(resized[None], patch)
    count = rows * cols
    patches = torch.zeros(seq_len, real_patches.shape[-1])
    coords = torch.zeros(seq_len, 2, dtype=torch.long)
    mask = torch.zeros(seq_len, dtype=torch.bool)
    patches[:count], coords[:count], mask[:count] = real_patches[0], real_coords[0], True
    return patches, coords, mask


def naflex_batch(images: list[Image.Image], patch: int, seq_len: int) -> dict[str, torch.Tensor]:
    """The NaFlex image keys of a batch (see training.objectives)."""
    patches, coords, mask = zip(
        *(naflex_patches(image, patch, seq_len) for image in images), strict=True
    )
    return {
        "patches": torch.stack(patches),
        "patch_coords": torch.stack(coords),
        "patch_mask": torch.stack(mask),
    }
