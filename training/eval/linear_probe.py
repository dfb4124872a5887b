"""Linear-probe classification on frozen features (CLIP's protocol, in its simplest form): a
multinomial logistic regression with an L2 penalty, fitted by L-BFGS on standardised training
features, scored by top-1 on held-out features.

Where k-NN asks whether neighbours in the embedding share a class, the probe asks whether the
class can be read off the features linearly at all, however little of the embedding's geometry
it takes up (a colour-dominated embedding can hide a kind direction from k-NN, not from a probe).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LinearProbe:
    weight: torch.Tensor  # [D, C]
    bias: torch.Tensor  # [C]
    mean: torch.Tensor  # [D], of the training features
    std: torch.Tensor  # [D]

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Class indices [N] for features [N, D]."""
        return self.logits(features).argmax(dim=1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.float() - self.mean) / self.std) @ self.weight + self.bias


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    l2: float = 1e-3,
    max_iter: int = 300,
) -> LinearProbe:
    """Fit on features [N, D] with labels [N] in [0, classes); `l2` weighs the squared weights
    against the mean cross-entropy."""
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be [N, D] and labels [N]; got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise ValueError(f"labels must be non-empty and in [0, {classes})")
    features = features.float()
    mean, std = features.mean(dim=0), features.std(dim=0).clamp(min=1e-6)
    standard = (features - mean) / std
    weight = torch.zeros(features.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(standard @ weight + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LinearProbe(weight.detach(), bias.detach(), mean, std)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    classes: int,
    l2: float = 1e-3,
) -> dict[str, float | int]:
    """Top-1 of a probe fitted on the training features, on both splits, with the test set's
    majority-class share as chance."""
    probe = fit_linear_probe(train_features, train_labels, classes, l2)
    train_top1 = (probe.predict(train_features) == train_labels).float().mean().item()
    top1 = (probe.predict(test_features) == test_labels).float().mean().item()
    chance = torch.bincount(test_labels, minlength=classes).max().item() / len(test_labels)
    return {
        "top1": top1,
        "train_top1": train_top1,
        "chance": chance,
        "train_samples": len(train_labels),
        "samples": len(test_labels),
    }
