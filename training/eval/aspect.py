"""Zero-shot classification on extreme aspect ratios: square resize vs NaFlex.

The same labelled images are classified twice: squashed to the model's square input (what a
fixed-resolution encoder sees: a 4:1 strip becomes a distorted square), and NaFlex: resized
keeping their aspect ratio to the largest patch grid within a sequence length (by default the
square input's patch count, so both see the same number of patches) and padded with masks.
A model adapted with phase 3 should gain on the second; a phase-1-only model usually does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.data.naflex import naflex_batch
from training.data.samples import decode_image, open_rgb
from training.eval.datasets import classnames_and_templates
from training.eval.embed import batched, embed_images
from training.eval.zeroshot import class_embeddings, iter_labelled_image_bytes
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer

BATCH_SIZE = 64


@torch.no_grad()
def embed_naflex(
    model: SigLIP2, images: list[bytes], seq_len: int, batch_size: int = BATCH_SIZE
) -> torch.Tensor:
    """[N, D] unit vectors of images given to the model at their own aspect ratio."""
    device = next(model.parameters()).device
    patch = model.cfg.vision.patch_size
    out = []
    for chunk in batched(images, batch_size):
        # Full-resolution decodes: the NaFlex grid decides the size, not a JPEG draft.
        batch = naflex_batch([open_rgb(data) for data in chunk], patch, seq_len)
        pooled, _ = model.encode_image(**{k: v.to(device) for k, v in batch.items()})
        out.append(F.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(out)


def aspect_zeroshot(
    model: SigLIP2,
    tokenizer: Tokenizer,
    dataset: str,
    split: str = "test",
    seq_len: int | None = None,
) -> dict[str, float]:
    """Top-1 accuracy with square inputs and with NaFlex inputs of `seq_len` patches."""
    model.eval()
    classnames, templates = classnames_and_templates(dataset)
    size, patch = model.cfg.vision.image_size, model.cfg.vision.patch_size
    seq_len = seq_len or (size // patch) ** 2
    classes = class_embeddings(model, tokenizer, classnames, templates)
    # Streamed: one batch of encoded images at a time, each embedded both ways.
    square, naflex, labels = [], [], []
    for chunk in batched(iter_labelled_image_bytes(dataset, split), BATCH_SIZE):
        images = [data for data, _ in chunk]
        labels += [label for _, label in chunk]
        square.append(embed_images(model, torch.stack([decode_image(d, size) for d in images])))
        naflex.append(embed_naflex(model, images, seq_len))
    square, naflex = torch.cat(square) @ classes.T, torch.cat(naflex) @ classes.T
    labels = torch.tensor(labels)
    majority = torch.bincount(labels, minlength=len(classnames)).max().item() / len(labels)
    return {
        "square_top1": (square.argmax(1) == labels).float().mean().item(),
        "naflex_top1": (naflex.argmax(1) == labels).float().mean().item(),
        "chance": majority,
        "seq_len": seq_len,
        "classes": len(classnames),
        "samples": len(labels),
    }
