"""SILC local-to-global self-distillation: the student's projections of local crops are trained
to match the EMA teacher's centred, sharpened projection of the global view of the same image."""

from __future__ import annotations

from torch import Tensor

from training.losses.distillation import TeacherCenter, soft_cross_entropy


def silc_loss(
    teacher_global_logits: Tensor,
    student_local_logits: Tensor,
    center: TeacherCenter,
    teacher_temperature: float = 0.04,
    student_temperature: float = 0.1,
    sample_mask: Tensor | None = None,
) -> Tensor:
    """Mean over images (where sample_mask is True) and local crops of
    CE(teacher(global) ‖ student(crop)). Shapes: teacher [B, K], student [B, V, K] for V crops.
    The center is read, not updated: call center.update(teacher_global_logits) after the step."""
    if (
        student_local_logits.ndim != 3
        or student_local_logits.shape[0] != teacher_global_logits.shape[0]
    ):
        raise ValueError(
            f"expected teacher [B, K] and student [B, V, K]; got {tuple(teacher_global_logits.shape)} "
            f"and {tuple(student_local_logits.shape)}"
        )
    targets = center.targets(teacher_global_logits, teacher_temperature)
    per_crop = soft_cross_entropy(
        targets[:, None, :], student_local_logits, student_temperature
    )  # [B, V]
    per_image = per_crop.mean(dim=1)
    if sample_mask is None:
        return per_image.mean()
    weights = sample_mask.float()
    return (per_image * weights).sum() / weights.sum().clamp(min=1.0)
