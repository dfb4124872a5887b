"""Zero-shot classification: class embeddings from prompt templates, accuracy vs chance."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from training.data.samples import IMAGE_EXTENSIONS, BadSample, decode_image
from training.eval.datasets import classnames_and_templates, iter_split
from training.eval.embed import embed_image_stream, embed_texts
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer


def class_embeddings(
    model: SigLIP2, tokenizer: Tokenizer, classnames: list[str], templates: list[str]
) -> torch.Tensor:
    """[C, D]: the renormalised mean of each class's prompt embeddings (CLIP's prompt ensemble)."""
    prompts = [template.replace("{c}", name) for name in classnames for template in templates]
    embeddings = embed_texts(model, tokenizer, prompts).view(len(classnames), len(templates), -1)
    return F.normalize(embeddings.mean(dim=1), dim=-1)


def iter_labelled_image_bytes(dataset: str, split: str = "test") -> Iterator[tuple[bytes, int]]:
    """The split's encoded images and their class ids, one sample at a time."""
    for raw in iter_split(dataset, split):
        image = next((raw.files[e] for e in IMAGE_EXTENSIONS if e in raw.files), None)
        if image is None or "cls" not in raw.files:
            raise BadSample("incomplete_eval_sample", f"{dataset} {raw.key}: {sorted(raw.files)}")
        yield image, int(raw.files["cls"].decode().strip())


def labelled_image_bytes(dataset: str, split: str = "test") -> tuple[list[bytes], torch.Tensor]:
    """The split's encoded images and their class ids, all in memory (for small sets)."""
    pairs = list(iter_labelled_image_bytes(dataset, split))
    return [image for image, _ in pairs], torch.tensor([label for _, label in pairs])


def load_labelled_images(
    dataset: str, image_size: int, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded images and labels, all in memory (benchmarks that train on small sets)."""
    images, labels = labelled_image_bytes(dataset, split)
    return torch.stack([decode_image(data, image_size) for data in images]), labels


def embed_labelled_split(
    model: SigLIP2, dataset: str, split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [N, D] and labels [N] of a split, streamed: images are decoded batch by batch."""
    labels: list[int] = []

    def decoded() -> Iterator[torch.Tensor]:
        for data, label in iter_labelled_image_bytes(dataset, split):
            labels.append(label)
            yield decode_image(data, model.cfg.vision.image_size)

    embeddings = embed_image_stream(model, decoded())
    return embeddings, torch.tensor(labels)


def zeroshot_accuracy(
    model: SigLIP2, tokenizer: Tokenizer, dataset: str, split: str = "test"
) -> dict[str, float]:
    """Top-1 accuracy, and chance (the most frequent class's share, the best a blind guess gets)."""
    model.eval()
    classnames, templates = classnames_and_templates(dataset)
    embeddings, labels = embed_labelled_split(model, dataset, split)
    scores = embeddings @ class_embeddings(model, tokenizer, classnames, templates).T
    predictions = scores.argmax(dim=1)
    majority = torch.bincount(labels, minlength=len(classnames)).max().item() / len(labels)
    return {
        "top1": (predictions == labels).float().mean().item(),
        "chance": majority,
        "classes": len(classnames),
        "samples": len(labels),
    }
