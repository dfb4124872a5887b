"""k-NN classification on frozen, L2-normalised image embeddings (the DINO protocol): each
query's k most cosine-similar memory images vote for their class with weight exp(sim / T).

The memory bank is DATASET/train when it exists; otherwise every test image is classified by
the other test images (leave-one-out), which needs no split of a small evaluation set.
"""

from __future__ import annotations

import torch

from training.eval.datasets import classnames_and_templates, split_shards
from training.eval.zeroshot import embed_labelled_split
from training.models.siglip import SigLIP2

DEFAULT_KS = (1, 10)
TEMPERATURE = 0.07


def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    classes: int,
    temperature: float = TEMPERATURE,
    leave_one_out: bool = False,
) -> torch.Tensor:
    """Class predictions [Q] for unit-vector `queries` [Q, D] from a unit-vector `bank` [M, D].
    With `leave_one_out`, queries are the bank itself and each skips its own row."""
    similarity = queries @ bank.T
    if leave_one_out:
        similarity.fill_diagonal_(float("-inf"))
    available = bank.shape[0] - (1 if leave_one_out else 0)
    if available < 1:
        raise ValueError("k-NN needs at least one memory image besides the query")
    top_similarity, top_index = similarity.topk(min(k, available), dim=1)
    votes = torch.zeros(queries.shape[0], classes, dtype=similarity.dtype)
    votes.scatter_add_(1, bank_labels[top_index], (top_similarity / temperature).exp())
    return votes.argmax(dim=1)


def knn_accuracy(
    model: SigLIP2, dataset: str, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, object]:
    """Top-1 accuracy for each k, with the majority class's share as chance."""
    classnames, _ = classnames_and_templates(dataset)
    queries, labels = embed_labelled_split(model, dataset, "test")
    try:
        split_shards(dataset, "train")
        bank, bank_labels = embed_labelled_split(model, dataset, "train")
        leave_one_out = False
    except FileNotFoundError:
        bank, bank_labels, leave_one_out = queries, labels, True
    metrics: dict[str, object] = {}
    for k in ks:
        predicted = knn_predict(
            bank, bank_labels, queries, k, len(classnames), leave_one_out=leave_one_out
        )
        metrics[f"top1@k{k}"] = (predicted == labels).float().mean().item()
    chance = torch.bincount(labels, minlength=len(classnames)).max().item() / len(labels)
    metrics.update(
        chance=chance,
        samples=len(labels),
        memory=len(bank_labels),
        memory_split="test (leave-one-out)" if leave_one_out else "train",
    )
    return metrics
