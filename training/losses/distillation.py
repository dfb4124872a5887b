"""Pieces shared by the self-distillation losses of phase 2 (SILC on pooled views, TIPS on masked
patches): the teacher's centred and sharpened targets, and the soft cross-entropy between teacher
probabilities and student log-probabilities.

Centering (an EMA of the mean teacher logits, subtracted before the teacher softmax) and a low
teacher temperature together keep the teacher from collapsing onto one prototype; the center is
averaged across ranks so every rank uses the same one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class TeacherCenter(nn.Module):
    """EMA center of teacher logits; a buffer, so it is saved with the module's state_dict."""

    def __init__(self, prototypes: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"center momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(prototypes))

    def targets(self, teacher_logits: Tensor, temperature: float) -> Tensor:
        """Teacher probabilities: softmax((logits − center) / temperature), fp32, no gradient."""
        return F.softmax((teacher_logits.detach().float() - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: Tensor, row_mask: Tensor | None = None) -> None:
        """Move the center toward the mean teacher logits of the real rows, over all ranks."""
        logits = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
        weights = (
            torch.ones(logits.shape[0], device=logits.device)
            if row_mask is None
            else row_mask.reshape(-1).float()
        )
        totals = torch.cat([(weights[:, None] * logits).sum(0), weights.sum()[None]])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        batch_mean = totals[:-1] / totals[-1].clamp(min=1.0)
        self.center.mul_(self.momentum).add_(batch_mean, alpha=1 - self.momentum)


def soft_cross_entropy(
    teacher_probs: Tensor, student_logits: Tensor, student_temperature: float
) -> Tensor:
    """−Σ_k p_k log softmax(s / τ)_k over the last dimension, fp32; returns one value per row."""
    log_probs = F.log_softmax(student_logits.float() / student_temperature, dim=-1)
    return -(teacher_probs * log_probs).sum(dim=-1)
