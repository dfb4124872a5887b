"""Image ↔ text retrieval recall@K; an image may have several captions (one per line)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from training.data.samples import IMAGE_EXTENSIONS, BadSample, decode_image
from training.eval.datasets import iter_split
from training.eval.embed import embed_image_stream, embed_texts
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer


def embed_pairs(
    model: SigLIP2, dataset: str, split: str = "test"
) -> tuple[torch.Tensor, list[str], list[int]]:
    """Image embeddings (streamed: decoded batch by batch), all captions, and for each caption
    the index of its image."""
    captions: list[str] = []
    owner: list[int] = []

    def decoded() -> Iterator[torch.Tensor]:
        for index, raw in enumerate(iter_split(dataset, split)):
            image = next((raw.files[e] for e in IMAGE_EXTENSIONS if e in raw.files), None)
            if image is None or "txt" not in raw.files:
                raise BadSample(
                    "incomplete_eval_sample", f"{dataset} {raw.key}: {sorted(raw.files)}"
                )
            text = raw.files["txt"].decode()
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            captions.extend(lines)
            owner.extend([index] * len(lines))
            yield decode_image(image, model.cfg.vision.image_size)

    return embed_image_stream(model, decoded()), captions, owner


def recall_at_k(
    similarity: torch.Tensor, image_of_text: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """`similarity` is [images, texts]. Text→image: is the caption's own image in its top K?
    Image→text: is any of the image's captions in its top K?"""
    metrics = {}
    images = similarity.shape[0]
    for k in ks:
        top_images = similarity.T.topk(min(k, images), dim=1).indices  # [texts, k]
        metrics[f"text_to_image_R@{k}"] = (
            (top_images == image_of_text[:, None]).any(1).float().mean().item()
        )
        top_texts = similarity.topk(min(k, similarity.shape[1]), dim=1).indices  # [images, k]
        hits = image_of_text[top_texts] == torch.arange(images)[:, None]
        metrics[f"image_to_text_R@{k}"] = hits.any(1).float().mean().item()
    return metrics


def retrieval_recall(
    model: SigLIP2, tokenizer: Tokenizer, dataset: str, split: str = "test"
) -> dict[str, float]:
    model.eval()
    images, captions, owner = embed_pairs(model, dataset, split)
    similarity = images @ embed_texts(model, tokenizer, captions).T
    return recall_at_k(similarity, torch.tensor(owner))
