"""Training objectives: what one step computes from a model and a batch.

Phase 1 = SigLIP sigmoid loss on the contrastive samples + LocCa decoder loss on every sample.
Phase 2 = phase 1 + SILC and TIPS self-distillation against an EMA teacher, Gram anchoring to
a frozen Gram teacher, and KoLeo. Phase 3 (NaFlex) runs either objective on NaFlex batches.

Batch contract (built by training.data):
- "image" FloatTensor [B, 3, H, W] in [-1, 1], or NaFlex "patches" [B, N, p*p*3],
  "patch_coords" [B, N, 2], "patch_mask" [B, N];
- "text" LongTensor [B, L] (EOS-padded);
- "contrastive" BoolTensor [B] (False for grounding samples);
- the keys of training.locca_targets.collate_locca;
- phase 2 only: "local_crops" FloatTensor [B, V, 3, h, w] (SILC student views).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.distributed import unwrap
from training.losses.gram import gram_loss
from training.losses.koleo import koleo_loss
from training.losses.sigmoid import BACKENDS, sigmoid_loss
from training.losses.silc import silc_loss
from training.losses.tips import sample_token_mask, tips_loss
from training.tokenizer import TASKS

NAFLEX_KEYS = ("patches", "patch_coords", "patch_mask")


@dataclass
class LossConfig:
    sigmoid_weight: float = 1.0
    locca_weight: float = 1.0
    # "auto": the ring backend under torch.distributed with several ranks, else local.
    sigmoid_backend: str = "auto"
    sigmoid_chunk_size: int = 1024
    # Probability of parallel prediction for the LocCa decoder, drawn per example or per batch.
    parallel_prob: float = 0.5
    parallel_per_example: bool = True
    # Drop decoder rows without targets and trailing padding columns (dynamic shapes; turn off
    # where static shapes matter more than the saved work, e.g. under torch.compile).
    locca_compact: bool = True
    # Phase 2 (SILC + TIPS against the EMA teacher, Gram anchoring, KoLeo).
    silc_weight: float = 1.0
    tips_weight: float = 0.25
    # Multiplies the SILC and TIPS weights; SigLIP 2 scales them with model size.
    distill_size_factor: float = 1.0
    gram_weight: float = 1.0
    koleo_weight: float = 0.1
    teacher_temperature: float = 0.04
    student_temperature: float = 0.1
    tips_mask_ratio: float = 0.5

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


def contrastive_rows(batch: dict[str, Tensor]) -> Tensor:
    """Indices of the contrastive samples: the only rows whose text the model encodes."""
    return batch["contrastive"].bool().nonzero(as_tuple=True)[0]


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


def locca_task_losses(token_losses: Tensor, decoder_batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean CE per task, for logging (NaN for a task without targets in this batch); the
    flattened token losses follow target_mask's row-major order."""
    target_mask = decoder_batch["target_mask"]
    task_of_token = decoder_batch["task_index"][:, None].expand_as(target_mask)[target_mask]
    losses = token_losses.detach().float()
    sums = torch.zeros(len(TASKS), device=losses.device).index_add_(0, task_of_token, losses)
    counts = torch.bincount(task_of_token, minlength=len(TASKS)).float()
    means = torch.where(counts > 0, sums / counts.clamp(min=1.0), float("nan"))
    return {f"locca_{task}": means[index] for index, task in enumerate(TASKS)}


def to_floats(terms: dict[str, Tensor]) -> dict[str, float]:
    """Scalar tensors → floats with one device-to-host copy (one sync per step on GPU)."""
    values = torch.stack([value.detach().float().reshape(()) for value in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


def _phase1_terms(
    out: dict[str, Tensor],
    batch: dict[str, Tensor],
    decoder_batch: dict[str, Tensor],
    cfg: LossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
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
    terms = {
        "sigmoid": contrastive_loss,
        "t": out["logit_scale"].exp(),
        "b": out["logit_bias"],
        "contrastive_samples": contrastive.sum(),
    }
    if "locca_token_losses" not in out:  # locca_weight 0: the decoder did not run
        return cfg.sigmoid_weight * contrastive_loss, terms
    token_losses = out["locca_token_losses"]
    caption_loss = token_losses.sum() / max(token_losses.numel(), 1)
    total = cfg.sigmoid_weight * contrastive_loss + cfg.locca_weight * caption_loss
    terms["locca"] = caption_loss
    terms.update(locca_task_losses(token_losses, decoder_batch))
    return total, terms


def decoder_rows(batch: dict[str, Tensor], cfg: LossConfig) -> dict[str, Tensor] | None:
    """locca_inputs, or None when cfg.locca_weight is 0: the decoder is then not run at all
    (its loss would be multiplied by 0). The parallel-prediction draw is made either way, so
    the random stream, and with it every later draw, is the same as with the decoder on."""
    if cfg.locca_weight != 0:
        return locca_inputs(batch, cfg)
    rows = sum(batch[f"locca_{task}_tokens"].shape[0] for task in TASKS)
    sample_parallel(rows, cfg, batch[f"locca_{TASKS[0]}_tokens"].device)
    return None


def phase1_loss(
    model: torch.nn.Module, batch: dict[str, Tensor], cfg: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the sigmoid loss (contrastive samples) and the LocCa loss (mean over all
    real target tokens of all samples). `model` is a SigLIP2, possibly wrapped by DDP/FSDP: it is
    called once, through forward. Returns (scalar loss, floats for logging: each term, t, b,
    contrastive sample count, per-task LocCa CE; no LocCa terms when locca_weight is 0)."""
    decoder_batch = decoder_rows(batch, cfg)
    out = model(
        **image_inputs(batch),
        text=batch["text"],
        text_rows=contrastive_rows(batch),
        locca=decoder_batch,
    )
    total, terms = _phase1_terms(out, batch, decoder_batch, cfg)
    return total, to_floats({"loss": total, **terms})


def real_patch_mask(model: torch.nn.Module, image_kwargs: dict[str, Tensor]) -> Tensor:
    """[B, N] True for real patches: the NaFlex patch_mask, or all patches of square images."""
    if "patch_mask" in image_kwargs:
        return image_kwargs["patch_mask"].bool()
    image = image_kwargs["image"]
    patch = unwrap(model).cfg.vision.patch_size
    count = (image.shape[-2] // patch) * (image.shape[-1] // patch)
    return torch.ones(image.shape[0], count, dtype=torch.bool, device=image.device)


def phase2_loss(
    model: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: dict[str, Tensor],
    cfg: LossConfig,
    gram_teacher: torch.nn.Module | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Phase-1 terms on the original image, plus SILC (teacher: global view; student: the
    batch's "local_crops" [B, V, 3, h, w]), TIPS (student: the global view with
    cfg.tips_mask_ratio of its real patches masked), Gram anchoring against `gram_teacher`
    (skipped when None or weighted 0) and KoLeo on the pooled student embeddings of this device's batch.
    Teachers run without gradients; the teacher centers move after the loss is computed (the
    caller moves the EMA teacher after the optimizer step, see models.distill.ema_update)."""
    decoder_batch = decoder_rows(batch, cfg)
    image_kwargs = image_inputs(batch)
    patch_mask = real_patch_mask(model, image_kwargs)
    tips_mask = sample_token_mask(patch_mask, cfg.tips_mask_ratio)
    with torch.no_grad():
        teacher_out = teacher(**image_kwargs, head_logits=True)
        gram_patches = (
            gram_teacher(**image_kwargs)["patch_tokens"]
            if gram_teacher is not None and cfg.gram_weight != 0
            else None  # weight 0: no forward
        )
    out = model(
        **image_kwargs,
        text=batch["text"],
        text_rows=contrastive_rows(batch),
        locca=decoder_batch,
        tips_mask=tips_mask,
        local_crops=batch["local_crops"],
    )
    phase1_total, terms = _phase1_terms(out, batch, decoder_batch, cfg)
    heads = unwrap(model).distill_heads
    temperatures = (cfg.teacher_temperature, cfg.student_temperature)
    silc = silc_loss(
        teacher_out["silc_logits"], out["silc_student_logits"], heads.silc_center, *temperatures
    )
    tips = tips_loss(
        teacher_out["tips_logits"],
        out["tips_student_logits"],
        tips_mask,
        heads.tips_center,
        *temperatures,
    )
    koleo = koleo_loss(out["image_embeds"])
    total = (
        phase1_total
        + cfg.distill_size_factor * (cfg.silc_weight * silc + cfg.tips_weight * tips)
        + cfg.koleo_weight * koleo
    )
    terms.update(silc=silc, tips=tips, koleo=koleo)
    if gram_patches is not None:
        gram = gram_loss(out["patch_tokens"], gram_patches, patch_mask)
        total = total + cfg.gram_weight * gram
        terms["gram"] = gram
    heads.silc_center.update(teacher_out["silc_logits"])
    heads.tips_center.update(teacher_out["tips_logits"], row_mask=patch_mask)
    return total, to_floats({"loss": total, **terms})
