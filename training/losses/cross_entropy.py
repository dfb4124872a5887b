"""Cross-entropy over a large vocabulary without materialising the [tokens, vocab] logits.

The output projection and the loss are fused: the forward pass walks the vocabulary in blocks
keeping a running log-sum-exp, and the backward pass recomputes each block's logits to form
softmax − one-hot (a vocabulary that fits one block takes plain autograd instead). Peak extra
memory is [tokens, chunk] instead of [tokens, vocab], and the value and gradients equal the plain `F.cross_entropy(hidden @ W.T + b, targets)` up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int
    ) -> Tensor:
        tokens = hidden.shape[0]
        compute_dtype = torch.float32
        running_max = torch.full(
            (tokens,), float("-inf"), device=hidden.device, dtype=compute_dtype
        )
        running_sum = torch.zeros(tokens, device=hidden.device, dtype=compute_dtype)
        target_logit = torch.zeros(tokens, device=hidden.device, dtype=compute_dtype)
        for start in range(0, weight.shape[0], chunk_size):
            logits = _block_logits(hidden, weight, bias, start, chunk_size)
            block_max = logits.amax(dim=1)
            new_max = torch.maximum(running_max, block_max)
            running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(
                logits - new_max[:, None]
            ).sum(1)
            running_max = new_max
            in_block = (targets >= start) & (targets < start + logits.shape[1])
            local = (targets - start).clamp(0, logits.shape[1] - 1)
            target_logit = torch.where(
                in_block, logits.gather(1, local[:, None])[:, 0], target_logit
            )
        log_normaliser = running_max + torch.log(running_sum)
        ctx.save_for_backward(hidden, weight, bias, targets, log_normaliser)
        ctx.chunk_size = chunk_size
        return log_normaliser - target_logit

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        hidden, weight, bias, targets, log_normaliser = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        grad_loss = grad_loss.float()
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32)
        grad_weight = (
            torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        )
        grad_bias = None
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = torch.zeros_like(bias, dtype=torch.float32)
        for start in range(0, weight.shape[0], chunk_size):
            logits = _block_logits(hidden, weight, bias, start, chunk_size)
            grad_logits = torch.exp(logits - log_normaliser[:, None])
            in_block = (targets >= start) & (targets < start + logits.shape[1])
            rows = in_block.nonzero(as_tuple=True)[0]
            grad_logits[rows, targets[rows] - start] -= 1.0
            grad_logits = grad_logits * grad_loss[:, None]
            block_weight = weight[start : start + logits.shape[1]].float()
            with torch.autocast(device_type=hidden.device.type, enabled=False):
                grad_hidden += grad_logits @ block_weight
                if grad_weight is not None:
                    grad_weight[start : start + logits.shape[1]] = grad_logits.T @ hidden.float()
            if grad_bias is not None:
                grad_bias[start : start + logits.shape[1]] = grad_logits.sum(0)
        return (
            grad_hidden.to(hidden.dtype),
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            None,
            None,
        )


def _block_logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, start: int, chunk_size: int
) -> Tensor:
    block = weight[start : start + chunk_size]
    # fp32 even under bf16 autocast: the log-sum-exp over a large vocabulary needs the precision.
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = hidden.float() @ block.float().T
        if bias is not None:
            logits = logits + bias[start : start + chunk_size].float()
    return logits


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_size: int = 8192
) -> Tensor:
    """Per-token cross-entropy of `hidden [M, D] @ weight[V, D].T + bias[V]` against `targets [M]`,
    computed in fp32 over vocabulary blocks of `chunk_size`. Returns [M] losses."""
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"expected hidden [M, D] and targets [M], got {tuple(hidden.shape)} and {tuple(targets.shape)}"
        )
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if weight.shape[0] <= chunk_size:
        # One block holds the whole vocabulary: the logits are kept either way, and autograd
        # through the plain ops is faster than the blockwise function (no recompute, fused CE).
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            logits = F.linear(
                hidden.float(), weight.float(), bias.float() if bias is not None else None
            )
            return F.cross_entropy(logits, targets, reduction="none")
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_size)
