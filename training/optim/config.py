"""Optimizer configuration."""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("muon", "adamw")


@dataclass
class OptimConfig:
    name: str = "muon"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 0
    total_steps: int = 1000
    min_lr_ratio: float = 0.0
    muon_momentum: float = 0.95
    ns_steps: int = 5
    # "float32" | "bfloat16" | None (bf16 on CUDA, fp32 elsewhere).
    ns_dtype: str | None = None
    adjust_lr: str = "match_rms_adamw"

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {self.name!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.total_steps <= 0 or self.warmup_steps < 0:
            raise ValueError(
                f"need total_steps > 0 and warmup_steps >= 0, got {self.total_steps}, {self.warmup_steps}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.ns_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"ns_dtype must be float32, bfloat16 or None, got {self.ns_dtype!r}")
        self.betas = tuple(self.betas)
