"""Training objectives: what one step computes from a model and a batch.

Phase 1 = SigLIP sigmoid loss on the contrastive samples + LocCa decoder loss on every sample.

Batch contract (built by training.data):
- "image" FloatTensor [B, 3, H, W] in [-1, 1], or NaFlex "patches" [B, N, p*p*3],
  "patch_coords" [B, N, 2], "patch_mask" [B, N];
- "text" LongTensor [B, L] (EOS-padded);
- "contrastive" BoolTensor [B] (False for grounding samples);
- the keys of training.locca_targets.collate_locca.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.losses.sigmoid import BACKENDS, sigmoid_loss
from training.tokenizer import TASKS

NAFLEX_KEYS = ("patches", "patch_coords", "patch_mask")


@dataclass
class LossConfig:
    sigmoid_weight: float = 1.0
    locca_weight: float = 1.0
    sigmoid_backend: str = "local"
    sigmoid_chunk_size: int = 1024
    # Probability of parallel prediction for the LocCa decoder, drawn per example or per batch.
    parallel_prob: float = 0.5
    parallel_per_example: bool = True
    # Drop decoder rows without targets and trailing padding columns (dynamic shapes; turn off
    # where static shapes matter more than the saved work, e.g. under torch.compile).
    locca_compact: bool = True

    def __post_init__(self) -> None:
        if self.sigmoid_backend not in BACKENDS:
            raise ValueError(
                f"sigmoid_backend must be one of {BACKENDS}, got {self.sigmoid_backend!r}"
            )
        if not 0.0 <= self.parallel_prob <= 1.0:
            raise ValueError(f"parallel_prob must be in [0, 1], got {self.parallel_prob}")


def image_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The encode_image keyword arguments present in a batch (square or NaFlex)."""
    if "image" in batch:
        return {"image": batch["image"]}
    missing = [key for key in NAFLEX_KEYS if key not in batch]
    if missing:
        raise KeyError(f"batch has neither 'image' nor the NaFlex keys (missing {missing})")
    return {key: batch[key] for key in NAFLEX_KEYS}


def sample_parallel(batch_size: int, cfg: LossConfig, device: torch.device) -> Tensor:
    """BoolTensor [batch_size]: which rows the LocCa decoder predicts in parallel."""
    if cfg.parallel_per_example:
        return torch.rand(batch_size, device=device) < cfg.parallel_prob
    return (torch.rand((), device=device) < cfg.parallel_prob).expand(batch_size)


def locca_inputs(batch: dict[str, Tensor], cfg: LossConfig) -> dict[str, Tensor]:
    """The decoder batch: every (task, image) pair as one row, task-major, with the
    parallel-prediction choice drawn per row (or once per batch), the image each row reads
    ("image_index") and its task ("task_index"). With cfg.locca_compact, rows without targets
    are dropped and columns cut after the last real token: most web samples have a caption
    only and grounding samples none, so this removes most of the decoder's work."""
    tokens = torch.cat([batch[f"locca_{task}_tokens"] for task in TASKS])
    prefix_mask = torch.cat([batch[f"locca_{task}_prefix_mask"] for task in TASKS])
    target_mask = torch.cat([batch[f"locca_{task}_target_mask"] for task in TASKS])
    images = batch[f"locca_{TASKS[0]}_tokens"].shape[0]
    image_index = torch.arange(images, device=tokens.device).repeat(len(TASKS))
    task_index = torch.arange(len(TASKS), device=tokens.device).repeat_interleave(images)
    parallel = sample_parallel(tokens.shape[0], cfg, tokens.device)
    if cfg.locca_compact:
        rows = target_mask.any(dim=1).nonzero(as_tuple=True)[0]
        valid = prefix_mask | target_mask
        length = int(valid.any(dim=0).nonzero().max()) + 1 if rows.numel() else 1
        tokens, prefix_mask, target_mask = (
            t[rows, :length] for t in (tokens, prefix_mask, target_mask)
        )
        image_index, task_index, parallel = image_index[rows], task_index[rows], parallel[rows]
    return {
        "tokens": tokens,
        "prefix_mask": prefix_mask,
        "target_mask": target_mask,
        "parallel": parallel,
        "image_index": image_index,
        "task_index": task_index,
    }


def locca_metrics(token_losses: Tensor, decoder_batch: dict[str, Tensor]) -> dict[str, float]:
    """Mean CE per task for logging (NaN for a task without targets in this batch); the
    flattened token losses follow target_mask's row-major order."""
    target_mask = decoder_batch["target_mask"]
    task_of_token = decoder_batch["task_index"][:, None].expand_as(target_mask)[target_mask]
    detached = token_losses.detach()
    metrics = {}
    for index, task in enumerate(TASKS):
        selected = detached[task_of_token == index]
        metrics[f"locca_{task}"] = selected.mean().item() if selected.numel() else float("nan")
    return metrics


def phase1_loss(
    model: torch.nn.Module, batch: dict[str, Tensor], cfg: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the sigmoid loss (contrastive samples) and the LocCa loss (mean over all
    real target tokens of all samples). `model` is a SigLIP2, possibly wrapped by DDP/FSDP: it is
    called once, through forward. Returns (scalar loss, floats for logging: each term, t, b,
    contrastive sample count, per-task LocCa CE)."""
    decoder_batch = locca_inputs(batch, cfg)
    out = model(**image_inputs(batch), text=batch["text"], locca=decoder_batch)
    contrastive = batch["contrastive"].bool()
    contrastive_loss = sigmoid_loss(
        F.normalize(out["image_embeds"].float(), dim=-1),
        F.normalize(out["text_embeds"].float(), dim=-1),
        out["logit_scale"],
        out["logit_bias"],
        contrastive,
        backend=cfg.sigmoid_backend,
        chunk_size=cfg.sigmoid_chunk_size,
    )
    token_losses = out["locca_token_losses"]
    caption_loss = token_losses.sum() / max(token_losses.numel(), 1)
    total = cfg.sigmoid_weight * contrastive_loss + cfg.locca_weight * caption_loss
    metrics = {
        "loss": total.item(),
        "sigmoid": contrastive_loss.item(),
        "locca": caption_loss.item(),
        "t": out["logit_scale"].detach().exp().item(),
        "b": out["logit_bias"].detach().item(),
        "contrastive_samples": float(contrastive.sum().item()),
        **locca_metrics(token_losses, decoder_batch),
    }
    return total, metrics
