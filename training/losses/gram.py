"""Gram anchoring (DINOv3): keep the patch-to-patch similarity structure of a frozen "Gram
teacher" (the phase-1-end model or an EMA snapshot) while phase 2 trains the student.

Per image, patch features are L2-normalised and their Gram matrix of cosine similarities is
compared by mean squared error over the pairs of real (unpadded) patches.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def patch_gram(patch_tokens: Tensor) -> Tensor:
    """[B, N, D] → [B, N, N] cosine similarities between the patches of each image, fp32."""
    normalised = F.normalize(patch_tokens.float(), dim=-1)
    return normalised @ normalised.transpose(1, 2)


def gram_loss(
    student_patches: Tensor, teacher_patches: Tensor, patch_mask: Tensor | None = None
) -> Tensor:
    """MSE between student and Gram-teacher patch Gram matrices: mean over each image's real
    patch pairs, then over images. Shapes: [B, N, D] (widths may differ), patch_mask [B, N]."""
    if student_patches.shape[:2] != teacher_patches.shape[:2]:
        raise ValueError(
            f"student and teacher patch grids differ: {tuple(student_patches.shape[:2])} vs "
            f"{tuple(teacher_patches.shape[:2])}"
        )
    squared = (patch_gram(student_patches) - patch_gram(teacher_patches.detach())) ** 2
    if patch_mask is None:
        return squared.mean()
    pair_mask = (patch_mask[:, :, None] & patch_mask[:, None, :]).float()
    per_image = (squared * pair_mask).sum(dim=(1, 2)) / pair_mask.sum(dim=(1, 2)).clamp(min=1.0)
    return per_image.mean()
