"""TIPS masked-patch prediction (iBOT-style): the student sees the global view with a share of
its patch embeddings replaced by the learned mask token; at the masked patches its patch-head
projections must match the EMA teacher's centred, sharpened projections of the unmasked view."""

from __future__ import annotations

import torch
from torch import Tensor

from training.losses.distillation import TeacherCenter, soft_cross_entropy


def sample_token_mask(
    patch_mask: Tensor, ratio: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """BoolTensor like `patch_mask` [B, N] with round(ratio · real patches) real patches per image
    set True, uniformly at random; padding is never masked."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    scores = torch.rand(patch_mask.shape, generator=generator, device="cpu").to(patch_mask.device)
    scores = scores.masked_fill(~patch_mask, float("inf"))
    ranks = scores.argsort(dim=1).argsort(dim=1)
    counts = torch.round(patch_mask.sum(dim=1).float() * ratio).long()
    return (ranks < counts[:, None]) & patch_mask


def tips_loss(
    teacher_patch_logits: Tensor,
    student_patch_logits: Tensor,
    token_mask: Tensor,
    center: TeacherCenter,
    teacher_temperature: float = 0.04,
    student_temperature: float = 0.1,
) -> Tensor:
    """CE(teacher ‖ student) averaged over each image's masked patches, then over the images that
    have any. Shapes: logits [B, N, K], token_mask [B, N] (True = masked, never padding)."""
    if (
        teacher_patch_logits.shape != student_patch_logits.shape
        or token_mask.shape != teacher_patch_logits.shape[:2]
    ):
        raise ValueError(
            f"shape mismatch: teacher {tuple(teacher_patch_logits.shape)}, student "
            f"{tuple(student_patch_logits.shape)}, mask {tuple(token_mask.shape)}"
        )
    targets = center.targets(teacher_patch_logits, teacher_temperature)
    per_patch = soft_cross_entropy(targets, student_patch_logits, student_temperature)  # [B, N]
    weights = token_mask.float()
    masked_per_image = weights.sum(dim=1)
    per_image = (per_patch * weights).sum(dim=1) / masked_per_image.clamp(min=1.0)
    has_masked = (masked_per_image > 0).float()
    return (per_image * has_masked).sum() / has_masked.sum().clamp(min=1.0)
