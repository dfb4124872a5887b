"""Learning-rate schedule: linear warmup, then cosine decay to min_lr_ratio · lr."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from training.optim.config import OptimConfig


def lr_at(step: int, cfg: OptimConfig) -> float:
    """The learning rate at optimizer step `step` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / decay_steps, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> LambdaLR:
    """A LambdaLR that scales every param group's initial lr by lr_at(step) / cfg.lr, so groups
    with their own base lr keep their ratio."""
    return LambdaLR(optimizer, lambda step: lr_at(step, cfg) / cfg.lr)
