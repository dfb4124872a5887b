"""SigLIP sigmoid loss, normalised per contrastive image of the global batch:

    L = −(1/N) Σ_{i,j contrastive} log σ(z_ij (t·x_i·y_j + b)),  z_ij = +1 if i = j else −1,

where t = exp(logit_scale) and N counts contrastive images over the global batch. Rows and
columns of non-contrastive samples (grounding batches) are masked, so shapes stay static and
those samples get exactly zero gradient from this loss.

Backends, equal in value and gradient to the single-process global-batch loss:
- "local": the full [B, B] logit matrix in one process;
- "chunked": text features in blocks; forward and backward recompute each block, so memory is
  [B, chunk] instead of [B, B];
- "ring": torch.distributed; each rank keeps its image features and passes its text features
  (with their mask) around a ring, one neighbour send/recv per step, overlapped with the block
  computation. In backward the text blocks travel the ring again, each carrying the gradient
  that every rank adds to it, and arrive home after a full turn;
- "auto": "ring" when torch.distributed runs more than one process, else "local", so a run
  launched with torchrun gets the global-batch loss without a config change.

Distributed scaling: every rank returns world_size · (its images' share of L). The mean over
ranks (what DDP/FSDP do to gradients, and what a logger averages) is therefore exactly L.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("auto", "local", "chunked", "ring")


def _block_loss_sum(
    images: Tensor,
    texts: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    row_mask: Tensor,
    col_mask: Tensor,
    positive_offset: int | None,
) -> Tensor:
    """Σ −log σ(z·logit) over the masked pairs of one [rows, cols] block, in fp32. The positive
    pairs are (i, j) with i = j + positive_offset; None means the block holds no positives."""
    with torch.autocast(device_type=images.device.type, enabled=False):
        logits = logit_scale.float().exp() * (images.float() @ texts.float().T) + logit_bias.float()
        signs = -torch.ones_like(logits)
        if positive_offset is not None:
            rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
            cols = torch.arange(logits.shape[1], device=logits.device)[None, :]
            signs = torch.where(rows == cols + positive_offset, 1.0, signs)
        pair_mask = row_mask[:, None] & col_mask[None, :]
        return torch.where(pair_mask, -F.logsigmoid(signs * logits), torch.zeros_like(logits)).sum()


def _block_grads(
    images: Tensor,
    texts: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    row_mask: Tensor,
    col_mask: Tensor,
    positive_offset: int | None,
    grad_scale: Tensor,
) -> tuple[Tensor, ...]:
    """Gradients of grad_scale · block loss w.r.t. (images, texts, logit_scale, logit_bias),
    recomputing the block under autograd."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (images, texts, logit_scale, logit_bias)]
        loss = _block_loss_sum(*leaves, row_mask, col_mask, positive_offset)
        return torch.autograd.grad(loss, leaves, grad_outputs=grad_scale)


def _contrastive_count(
    mask: Tensor, group: dist.ProcessGroup | None = None, distributed: bool = False
) -> Tensor:
    """Number of contrastive samples (over all ranks when distributed), at least 1."""
    count = mask.sum().to(torch.float32)
    if distributed:
        dist.all_reduce(count, group=group)
    return count.clamp(min=1.0)


class _ChunkedSigmoidLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images, texts, logit_scale, logit_bias, mask, normaliser, chunk_size):
        total = torch.zeros((), dtype=torch.float32, device=images.device)
        for start in range(0, texts.shape[0], chunk_size):
            stop = start + chunk_size
            total = total + _block_loss_sum(
                images, texts[start:stop], logit_scale, logit_bias, mask, mask[start:stop], start
            )
        ctx.save_for_backward(images, texts, logit_scale, logit_bias, mask, normaliser)
        ctx.chunk_size = chunk_size
        return total / normaliser

    @staticmethod
    def backward(ctx, grad_out):
        images, texts, logit_scale, logit_bias, mask, normaliser = ctx.saved_tensors
        grad_scale = grad_out / normaliser
        grad_images = torch.zeros_like(images)
        grad_texts = torch.zeros_like(texts)
        grad_logit_scale = torch.zeros_like(logit_scale)
        grad_logit_bias = torch.zeros_like(logit_bias)
        for start in range(0, texts.shape[0], ctx.chunk_size):
            stop = start + ctx.chunk_size
            g_images, g_texts, g_scale, g_bias = _block_grads(
                images,
                texts[start:stop],
                logit_scale,
                logit_bias,
                mask,
                mask[start:stop],
                start,
                grad_scale,
            )
            grad_images += g_images
            grad_texts[start:stop] = g_texts
            grad_logit_scale += g_scale
            grad_logit_bias += g_bias
        return grad_images, grad_texts, grad_logit_scale, grad_logit_bias, None, None, None


def _ring_shift(tensor: Tensor, group: dist.ProcessGroup | None) -> tuple[Tensor, list]:
    """Start sending `tensor` to the next rank and receiving the previous rank's into a new
    buffer; returns (buffer, requests to wait on)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    received = torch.empty_like(tensor)
    to_rank = (
        dist.get_global_rank(group, (rank + 1) % world) if group is not None else (rank + 1) % world
    )
    from_rank = (
        dist.get_global_rank(group, (rank - 1) % world) if group is not None else (rank - 1) % world
    )
    ops = [
        dist.P2POp(dist.isend, tensor.contiguous(), to_rank, group),
        dist.P2POp(dist.irecv, received, from_rank, group),
    ]
    return received, dist.batch_isend_irecv(ops)


def _wait(requests: list) -> None:
    for request in requests:
        request.wait()


class _RingSigmoidLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images, texts, logit_scale, logit_bias, mask, normaliser, group):
        world = dist.get_world_size(group)
        # The mask travels as one extra column so a block is a single message.
        block = torch.cat([texts.float(), mask[:, None].float()], dim=1)
        total = torch.zeros((), dtype=torch.float32, device=images.device)
        for step in range(world):
            pending = _ring_shift(block, group) if step + 1 < world else None
            total = total + _block_loss_sum(
                images,
                block[:, :-1],
                logit_scale,
                logit_bias,
                mask,
                block[:, -1] > 0.5,
                0 if step == 0 else None,
            )
            if pending is not None:
                block, requests = pending
                _wait(requests)
        ctx.save_for_backward(images, texts, logit_scale, logit_bias, mask, normaliser)
        ctx.group = group
        return total * world / normaliser

    @staticmethod
    def backward(ctx, grad_out):
        images, texts, logit_scale, logit_bias, mask, normaliser = ctx.saved_tensors
        group = ctx.group
        world = dist.get_world_size(group)
        grad_scale = grad_out * world / normaliser
        width = texts.shape[1]
        # [texts | mask | gradient accumulated for these texts]
        block = torch.cat(
            [texts.float(), mask[:, None].float(), torch.zeros_like(texts, dtype=torch.float32)],
            dim=1,
        )
        grad_images = torch.zeros_like(images, dtype=torch.float32)
        grad_logit_scale = torch.zeros_like(logit_scale)
        grad_logit_bias = torch.zeros_like(logit_bias)
        for step in range(world):
            g_images, g_texts, g_scale, g_bias = _block_grads(
                images,
                block[:, :width],
                logit_scale,
                logit_bias,
                mask,
                block[:, width] > 0.5,
                0 if step == 0 else None,
                grad_scale,
            )
            grad_images += g_images
            grad_logit_scale += g_scale
            grad_logit_bias += g_bias
            block = torch.cat([block[:, : width + 1], block[:, width + 1 :] + g_texts], dim=1)
            # After `world` shifts every block is back with its owner, carrying all ranks' gradients.
            block, requests = _ring_shift(block, group)
            _wait(requests)
        grad_texts = block[:, width + 1 :].to(texts.dtype)
        return (
            grad_images.to(images.dtype),
            grad_texts,
            grad_logit_scale,
            grad_logit_bias,
            None,
            None,
            None,
        )


def sigmoid_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    contrastive_mask: Tensor | None = None,
    *,
    backend: str = "local",
    chunk_size: int = 1024,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """The SigLIP loss of (normalised) features [B, D]; `logit_scale` is log t. Samples with
    contrastive_mask False are excluded as images and as texts. See the module docstring for the
    distributed scaling of the "ring" backend."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sigmoid loss backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        distributed = (
            dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1
        )
        backend = "ring" if distributed else "local"
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image and text features differ in shape: {tuple(image_features.shape)} vs {tuple(text_features.shape)}"
        )
    if contrastive_mask is None:
        contrastive_mask = torch.ones(
            image_features.shape[0], dtype=torch.bool, device=image_features.device
        )
    contrastive_mask = contrastive_mask.bool()
    if backend == "ring":
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "the ring sigmoid loss needs an initialised torch.distributed process group"
            )
        normaliser = _contrastive_count(contrastive_mask, group, distributed=True)
        return _RingSigmoidLoss.apply(
            image_features,
            text_features,
            logit_scale,
            logit_bias,
            contrastive_mask,
            normaliser,
            group,
        )
    normaliser = _contrastive_count(contrastive_mask)
    if backend == "chunked":
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return _ChunkedSigmoidLoss.apply(
            image_features,
            text_features,
            logit_scale,
            logit_bias,
            contrastive_mask,
            normaliser,
            chunk_size,
        )
    return (
        _block_loss_sum(
            image_features,
            text_features,
            logit_scale,
            logit_bias,
            contrastive_mask,
            contrastive_mask,
            0,
        )
        / normaliser
    )
