"""Image ↔ text retrieval recall@K; an image may have several captions (one per line).

Given the captions' text, a caption is a correct answer for every image that has it, not only
the image it was read from: a set whose captions repeat (the mini web's name kinds only, so 1,200
pictures share ~260 captions) would otherwise count a retrieved picture with the very same
caption as a miss, and cap R@1 at (distinct captions) / (captions). Image→text already counts
any of an image's captions; this is the same rule in both directions. A set whose captions are
all distinct gets the usual recall.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from training.data.samples import IMAGE_EXTENSIONS, BadSample, decode_image
from training.eval import HITS_SUFFIX, hit_string
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
    similarity: torch.Tensor,
    image_of_text: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    captions: Sequence[str] | None = None,
) -> dict[str, float | str]:
    """`similarity` is [images, texts]. Text→image: is an image that has the caption in its top
    K? Image→text: is any of the image's captions in its top K? Without `captions` an image has
    only the captions read from it (`image_of_text`); with them, also every identical caption.
    "text_to_image_R@1/hits" holds each caption's R@1 outcome, in order (see hit_string)."""
    images, texts = similarity.shape
    owner = image_of_text.numpy()
    if captions is None:
        caption_id = np.arange(texts)
    else:
        if len(captions) != texts:
            raise ValueError(f"{len(captions)} captions for {texts} texts")
        caption_id = np.unique(np.asarray(captions, dtype=object), return_inverse=True)[1]
    # (caption, image) pairs that are correct, as one integer key each
    correct = np.unique(caption_id.astype(np.int64) * images + owner)
    metrics = {}
    for k in ks:
        top_images = similarity.T.topk(min(k, images), dim=1).indices.numpy()  # [texts, k]
        hits = np.isin(caption_id[:, None].astype(np.int64) * images + top_images, correct)
        metrics[f"text_to_image_R@{k}"] = float(hits.any(1).mean())
        if k == 1:
            metrics["text_to_image_R@1" + HITS_SUFFIX] = hit_string(hits.any(1))
        top_texts = similarity.topk(min(k, texts), dim=1).indices.numpy()  # [images, k]
        keys = caption_id[top_texts].astype(np.int64) * images + np.arange(images)[:, None]
        metrics[f"image_to_text_R@{k}"] = float(np.isin(keys, correct).any(1).mean())
    return metrics


def retrieval_recall(
    model: SigLIP2, tokenizer: Tokenizer, dataset: str, split: str = "test"
) -> dict[str, float | str]:
    model.eval()
    images, captions, owner = embed_pairs(model, dataset, split)
    similarity = images @ embed_texts(model, tokenizer, captions).T
    return recall_at_k(similarity, torch.tensor(owner), captions=captions)
