"""Split a model's parameters between Muon and AdamW and build the optimizer.

Muon takes the hidden 2-D weight matrices: attention and MLP in the transformer blocks of every
tower and the decoder, the image tower's MAP head (its attention and MLP) and the text tower's
projection head. AdamW takes the rest: the input side (patch and token embeddings, position
grids), the decoder's vocabulary projection, the phase-2 distillation heads, norms, biases, t and
b, mask/BOS tokens. Weight decay applies to matrices only, never to norms, biases, scalars or
position grids.

The two pooling heads were AdamW's until 2026-12-07. On the mini web (minicc_quality.py, `tiny`,
1000 steps, three seeds) moving them to Muon took zero-shot from 22.7 +/- 3.4 to 30.4 +/- 4.0%,
ARef from 48.5 +/- 2.1 to 55.0 +/- 2.4% and k-NN from 30.8 +/- 1.9 to 37.1 +/- 3.7%: at tiny's
width the MAP head holds a third of the image tower's matrices, and on AdamW (at Muon's lr) it
trained worse than on Muon (MAP head alone moved: 26.7 +/- 4.0%); the text projection's move
added 3.7 points of zero-shot and 3.8 of T->I on the means, inside one sd.
"""

from __future__ import annotations

import torch
from torch import nn

from training.distributed import is_dtensor
from training.optim.config import OptimConfig
from training.optim.muon import Muon

_NO_DECAY_NAMES = ("position_embedding", "probe", "mask_token", "mask_embedding", "bos_embedding")


# The towers' pooling heads: hidden layers too (the MAP head's attention and MLP; the text
# tower's projection into the shared embedding space).
_HEAD_PREFIXES = ("vision.head.", "text.head.")


def is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    """A 2-D weight that maps hidden features to hidden features: Muon's."""
    if param.ndim != 2 or not name.endswith(".weight"):
        return False
    dotted = f".{name}"  # wrappers (DDP's "module.", compile's "_orig_mod.") prefix names
    return ".layers." in dotted or any(f".{prefix}" in dotted for prefix in _HEAD_PREFIXES)


def uses_weight_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim >= 2 and not any(part in name for part in _NO_DECAY_NAMES)


def split_parameters(model: nn.Module) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """{"muon": ..., "adamw_decay": ..., "adamw_no_decay": ...} of (name, parameter), trainable only."""
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {
        "muon": [],
        "adamw_decay": [],
        "adamw_no_decay": [],
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if is_hidden_matrix(name, param):
            groups["muon"].append((name, param))
        elif uses_weight_decay(name, param):
            groups["adamw_decay"].append((name, param))
        else:
            groups["adamw_no_decay"].append((name, param))
    return groups


def fused_on_cpu(groups: list[dict]) -> bool:
    """Whether AdamW should take its fused kernel: every parameter a plain CPU tensor. torch
    picks the per-tensor loop on CPU by default, whose ~10 small ops per parameter cost more than
    the arithmetic for a small model (Muon's AdamW groups use the fused kernel on CPU too); on
    CUDA torch's own default (foreach) is kept, and FSDP2 shards (DTensors) keep the default."""
    params = [p for g in groups for p in g["params"]]
    return all(p.device.type == "cpu" and not is_dtensor(p) for p in params)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """One optimizer for the whole model: Muon (with AdamW groups) or plain AdamW. Every group
    carries a "name" key so logs and tests can find it."""
    split = split_parameters(model)
    adamw_groups = [
        {
            "name": "adamw_decay",
            "params": [p for _, p in split["adamw_decay"]],
            "weight_decay": cfg.weight_decay,
        },
        {
            "name": "adamw_no_decay",
            "params": [p for _, p in split["adamw_no_decay"]],
            "weight_decay": 0.0,
        },
    ]
    if cfg.name == "adamw":
        adamw_groups[0]["params"] += [p for _, p in split["muon"]]
        groups = [g for g in adamw_groups if g["params"]]
        return torch.optim.AdamW(
            groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused_on_cpu(groups) or None
        )
    for group in adamw_groups:
        group["use_muon"] = False
    muon_group = {
        "name": "muon",
        "params": [p for _, p in split["muon"]],
        "weight_decay": cfg.weight_decay,
    }
    return Muon(
        [g for g in [muon_group, *adamw_groups] if g["params"]],
        lr=cfg.lr,
        momentum=cfg.muon_momentum,
        ns_steps=cfg.ns_steps,
        ns_dtype=cfg.ns_dtype,
        adjust_lr=cfg.adjust_lr,
        betas=cfg.betas,
        eps=cfg.eps,
    )
