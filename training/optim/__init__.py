"""Optimizers and the learning-rate schedule."""

from training.optim.build import build_optimizer, split_parameters
from training.optim.config import OptimConfig
from training.optim.muon import Muon
from training.optim.schedule import build_scheduler, lr_at

__all__ = ["Muon", "OptimConfig", "build_optimizer", "build_scheduler", "lr_at", "split_parameters"]
