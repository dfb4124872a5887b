"""The NSFW head's fitting settings, apart from the head so that CLIs can build them without torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FitSettings:
    hidden: tuple[int, ...] = (128, 32)
    epochs: int = 300
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    holdout: float = 0.2  # share of each class held out to measure the fitted head
    threshold: float = 0.5
    # When set: the threshold becomes the lowest one that removes at most this share of the
    # held-out safe rows (it needs a holdout); `threshold` is then unused.
    max_false_removal: float | None = None
