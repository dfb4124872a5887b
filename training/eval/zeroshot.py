"""Zero-shot classification: class embeddings from prompt templates, accuracy vs chance."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from training.data.samples import IMAGE_EXTENSIONS, BadSample, decode_image
from training.eval import HITS_SUFFIX, hit_string
from training.eval.datasets import classnames_and_templates, iter_split
from training.eval.embed import embed_image_stream, embed_processed, embed_texts
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
    model: SigLIP2, dataset: str, split: str = "test", naflex: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [N, D] and labels [N] of a split, streamed: images are decoded batch by batch.
    Square resize (the fixed-resolution input), or with `naflex` the HF export's preprocessing
    (aspect ratio kept, see embed_processed)."""
    labels: list[int] = []

    def images() -> Iterator[bytes]:
        for data, label in iter_labelled_image_bytes(dataset, split):
            labels.append(label)
            yield data

    if naflex:
        embeddings = embed_processed(model, images())
    else:
        size = model.cfg.vision.image_size
        embeddings = embed_image_stream(model, (decode_image(data, size) for data in images()))
    return embeddings, torch.tensor(labels)


def zeroshot_predictions(
    model: SigLIP2, tokenizer: Tokenizer, dataset: str, split: str = "test", naflex: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class ids [N] (nearest prompt-ensemble class embedding) and labels [N]."""
    model.eval()
    classnames, templates = classnames_and_templates(dataset)
    embeddings, labels = embed_labelled_split(model, dataset, split, naflex)
    scores = embeddings @ class_embeddings(model, tokenizer, classnames, templates).T
    return scores.argmax(dim=1), labels


def zeroshot_accuracy(
    model: SigLIP2, tokenizer: Tokenizer, dataset: str, split: str = "test", naflex: bool = False
) -> dict[str, float | str]:
    """Top-1 accuracy, and chance (the most frequent class's share, the best a blind guess gets).

    A model trained on NaFlex batches (phase 3) is scored on its native input, `naflex`: images
    at their own aspect ratio, preprocessed exactly as its Hugging Face export's processor does,
    so `pipeline("zero-shot-image-classification")` and AutoProcessor reproduce `top1`; then
    `input` says "naflex" and the square-resize accuracy is reported beside it as
    `square_top1`. "top1/hits" holds each image's outcome ("1" right), in the set's order, so
    that two models can be compared on the same images (see training.eval.hit_string)."""
    predictions, labels = zeroshot_predictions(model, tokenizer, dataset, split, naflex)
    classes = len(classnames_and_templates(dataset)[0])
    majority = torch.bincount(labels, minlength=classes).max().item() / len(labels)
    hits = predictions == labels
    metrics: dict[str, float | str] = {
        "top1": hits.float().mean().item(),
        "chance": majority,
        "classes": classes,
        "samples": len(labels),
        "top1" + HITS_SUFFIX: hit_string(hits.numpy()),
    }
    if naflex:
        square, _ = zeroshot_predictions(model, tokenizer, dataset, split)
        metrics.update(input="naflex", square_top1=(square == labels).float().mean().item())
    return metrics
