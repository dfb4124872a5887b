"""Normalised image and text embeddings of a trained SigLIP2, in batches, without gradients.

Evaluation streams its sets: images are decoded as a batch is needed and only their embeddings
are kept ([N, D]: for ImageNet-val at D = 768, 150 MB instead of ~39 GB of decoded pixels)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import torch
import torch.nn.functional as F

from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@torch.no_grad()
def embed_images(model: SigLIP2, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """[N, 3, S, S] in [-1, 1] → [N, D] unit vectors (on CPU)."""
    device = next(model.parameters()).device
    out = [
        F.normalize(model.encode_image(chunk.to(device))[0].float(), dim=-1).cpu()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(out)


def embed_image_stream(
    model: SigLIP2, images: Iterable[torch.Tensor], batch_size: int = 64
) -> torch.Tensor:
    """Like embed_images for [3, S, S] images that arrive one by one (e.g. decoded as read): at
    most one batch of pixels is held, and the batches, so the results, are embed_images'."""
    return torch.cat(
        [
            embed_images(model, torch.stack(chunk), batch_size)
            for chunk in batched(images, batch_size)
        ]
    )


@torch.no_grad()
def embed_processed(model: SigLIP2, images: Iterable[bytes], batch_size: int = 64) -> torch.Tensor:
    """[N, D] unit vectors of encoded images preprocessed as a Hugging Face export's image
    processor does (training.export.hf.image_processor: aspect ratio kept, at most the square
    input's patch count), so the numbers are what AutoProcessor and the zero-shot pipeline
    give. Images are decoded at full resolution, as those tools receive them."""
    from training.data.samples import open_rgb
    from training.export.hf import image_processor, naflex_inputs

    device = next(model.parameters()).device
    processor = image_processor(model.cfg)
    out = []
    for chunk in batched(images, batch_size):
        processed = processor(images=[open_rgb(data) for data in chunk], return_tensors="pt")
        inputs = {key: value.to(device) for key, value in naflex_inputs(processed).items()}
        out.append(F.normalize(model.encode_image(**inputs)[0].float(), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def embed_texts(
    model: SigLIP2, tokenizer: Tokenizer, texts: list[str], batch_size: int = 256
) -> torch.Tensor:
    device = next(model.parameters()).device
    length = model.cfg.text.context_length
    out = [
        F.normalize(
            model.encode_text(tokenizer.encode(chunk, length).to(device)).float(), dim=-1
        ).cpu()
        for chunk in batched(texts, batch_size)
    ]
    return torch.cat(out)
