"""Muon (momentum + Newton–Schulz orthogonalisation) for 2-D hidden matrices, with an AdamW
update for the groups that opt out (`use_muon=False`): one optimizer object, one state_dict,
one set of param_groups, so a single LR scheduler drives both.

Why our own: torch 2.14's `torch.optim.Muon` runs Newton–Schulz in bfloat16 unconditionally,
about 10× slower on CPUs without bf16 units; here the dtype is a parameter (fp32 on CPU, bf16 on
GPU by default). The update rule otherwise follows torch's: EMA momentum buffer, Nesterov
interpolation, decoupled weight decay, and the learning-rate adjustment by matrix shape
("match_rms_adamw" is Moonshot's 0.2·sqrt(max(fan_out, fan_in)), which lets AdamW learning
rates and weight decay carry over).

Per-parameter Python work dominates a small model's step on CPU, so one step handles a whole
group with foreach ops and batches Newton–Schulz over same-shape matrices.

FSDP2: a parameter that is a DTensor shard is orthogonalised on its gathered full matrix; each
rank computes the same full update and keeps its own shard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.adamw import adamw

from training.distributed import is_dtensor

# Quintic Newton–Schulz coefficients from Keller Jordan's Muon write-up (also torch's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_RULES = ("match_rms_adamw", "original", "none")


def orthogonalise(matrix: Tensor, steps: int, dtype: torch.dtype, eps: float = 1e-7) -> Tensor:
    """Approximate U·Vᵀ of matrix = U·S·Vᵀ by `steps` quintic Newton–Schulz iterations in `dtype`;
    returns the result in the input dtype. A [N, A, B] stack is orthogonalised matrix by matrix
    in one batched product per iteration."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(dtype)
    batched = x.ndim == 3
    if not batched:
        x = x.unsqueeze(0)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:  # iterate on the wide orientation so the Gram matrix is the small one
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        # a·x + (b·gram + c·gram²)·x, with the scalings fused into the products
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if transposed:
        x = x.mT
    return (x if batched else x[0]).to(matrix.dtype)


def adjusted_lr(lr: float, shape: torch.Size, rule: str) -> float:
    fan_out, fan_in = shape[0], shape[1]
    if rule == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(fan_out, fan_in))
    if rule == "original":
        return lr * math.sqrt(max(1.0, fan_out / fan_in))
    return lr


def default_ns_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class Muon(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_dtype: torch.dtype | str | None = None,
        weight_decay: float = 0.0,
        adjust_lr: str = "match_rms_adamw",
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> None:
        """`ns_dtype` None picks bf16 for CUDA parameters and fp32 otherwise. Groups with
        `use_muon=False` get AdamW with `betas`/`eps`; Muon groups must hold only 2-D tensors."""
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"lr, momentum and weight_decay must be >= 0 (got {lr}, {momentum}, {weight_decay})"
            )
        if adjust_lr not in ADJUST_LR_RULES:
            raise ValueError(f"adjust_lr must be one of {ADJUST_LR_RULES}, got {adjust_lr!r}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            # Kept as a name so state_dicts hold plain data.
            "ns_dtype": str(ns_dtype).removeprefix("torch.") if ns_dtype is not None else None,
            "weight_decay": weight_decay,
            "adjust_lr": adjust_lr,
            "betas": betas,
            "eps": eps,
            "use_muon": True,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"]:
                for param in group["params"]:
                    if param.ndim != 2:
                        raise ValueError(
                            f"Muon needs 2-D parameters; got shape {tuple(param.shape)}"
                        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["use_muon"]:
                self._muon_update(params, group)
            else:
                self._adamw_update(params, group)
        return loss

    def _muon_update(self, params: list[Tensor], group: dict[str, Any]) -> None:
        """One Muon step for a group: elementwise work as foreach ops over the whole group,
        Newton–Schulz batched over the matrices that share a shape (a transformer has a few
        shapes repeated in every block)."""
        grads = [p.grad for p in params]
        for param in params:
            if "momentum_buffer" not in self.state[param]:
                self.state[param]["momentum_buffer"] = torch.zeros_like(param.grad)
        buffers = [self.state[p]["momentum_buffer"] for p in params]
        momentum = group["momentum"]
        torch._foreach_lerp_(buffers, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, buffers, momentum) if group["nesterov"] else buffers
        dtype = (
            getattr(torch, group["ns_dtype"])
            if group["ns_dtype"]
            else default_ns_dtype(params[0].device)
        )
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        for param, update in _orthogonalised(params, updates, group["ns_steps"], dtype):
            param.add_(update, alpha=-adjusted_lr(group["lr"], param.shape, group["adjust_lr"]))

    def _adamw_update(self, params: list[Tensor], group: dict[str, Any]) -> None:
        """torch's AdamW step (its functional form, so the rule is exactly torch.optim.AdamW's).
        On CPU the fused kernel, one call for the whole group (per-tensor foreach ops cost more
        than the arithmetic for a small model's ~100 vectors); AdamW is elementwise, so FSDP2
        shards (DTensors) step on their local tensors and a sharded run rounds exactly like a
        replicated one. Elsewhere the foreach path, whose step counters may stay on the CPU."""
        for param in params:
            state = self.state[param]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(param)
                state["exp_avg_sq"] = torch.zeros_like(param)
        states = [self.state[p] for p in params]
        fused = all(p.device.type == "cpu" for p in params)

        def local(tensors: list[Tensor]) -> list[Tensor]:
            return [t.to_local() if fused and is_dtensor(t) else t for t in tensors]

        beta1, beta2 = group["betas"]
        adamw(
            local(params),
            local([p.grad for p in params]),
            local([s["exp_avg"] for s in states]),
            local([s["exp_avg_sq"] for s in states]),
            [],
            [s["step"] for s in states],
            foreach=not fused,
            fused=fused,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )


def _orthogonalised(
    params: list[Tensor], updates: list[Tensor], steps: int, dtype: torch.dtype
) -> list[tuple[Tensor, Tensor]]:
    """(param, orthogonalised update) pairs; plain tensors of one shape go through one batched
    Newton–Schulz, FSDP2 shards (DTensors) one by one on their gathered matrices."""
    pairs = []
    by_shape: dict[tuple[torch.Size, torch.device], list[int]] = {}
    for index, update in enumerate(updates):
        if is_dtensor(update):
            pairs.append((params[index], _orthogonalise_maybe_sharded(update, steps, dtype)))
        else:
            by_shape.setdefault((update.shape, update.device), []).append(index)
    for indices in by_shape.values():
        stacked = orthogonalise(torch.stack([updates[i] for i in indices]), steps, dtype)
        pairs.extend(
            (params[i], matrix) for i, matrix in zip(indices, stacked.unbind(), strict=True)
        )
    return pairs


def _orthogonalise_maybe_sharded(update: Tensor, steps: int, dtype: torch.dtype) -> Tensor:
    if is_dtensor(update):
        from torch.distributed.tensor import distribute_tensor

        full = orthogonalise(update.full_tensor(), steps, dtype)
        return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)
    return orthogonalise(update, steps, dtype)
