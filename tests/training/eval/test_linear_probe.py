import pytest
import torch

from training.eval.linear_probe import fit_linear_probe, linear_probe_accuracy


def clusters(count: int, classes: int, dims: int, spread: float, seed: int):
    """Gaussian blobs around random class centres, plus a large nuisance direction that carries
    no class information (the probe must standardise and look past it)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(count) % classes
    features = centres[labels] + spread * torch.randn(count, dims, generator=generator)
    features[:, 0] = 1000 * torch.randn(count, generator=generator)
    return features, labels


def test_probe_reads_classes_that_are_linearly_separable():
    train, train_labels = clusters(600, 5, 8, 0.5, seed=0)
    test, test_labels = clusters(200, 5, 8, 0.5, seed=1)
    metrics = linear_probe_accuracy(train, train_labels, test, test_labels, classes=5)
    assert metrics["top1"] > 0.95 and metrics["train_top1"] > 0.95
    assert metrics["chance"] == pytest.approx(0.2)
    assert (metrics["train_samples"], metrics["samples"]) == (600, 200)


def test_probe_stays_near_chance_when_features_carry_no_class():
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(600, 8, generator=generator), torch.randn(600, 8, generator=generator)
    labels = torch.arange(600) % 6
    metrics = linear_probe_accuracy(train, labels, test, labels, classes=6)
    assert metrics["top1"] < 0.3  # chance 1/6; an informative feature would give ~1.0


def test_probe_is_unchanged_by_shifting_and_scaling_features():
    # Features are standardised before the fit, so the penalty weighs every direction alike.
    train, labels = clusters(300, 3, 4, 0.7, seed=2)
    train[:, 0] /= 1000
    probe = fit_linear_probe(train, labels, classes=3)
    moved = fit_linear_probe(train * 7 + 3, labels, classes=3)
    assert torch.allclose(probe.logits(train), moved.logits(train * 7 + 3), atol=1e-3)


@pytest.mark.parametrize(
    "labels", [torch.tensor([0, 1, 3]), torch.tensor([-1, 0, 1]), torch.tensor([0, 1])]
)
def test_probe_rejects_bad_labels(labels):
    with pytest.raises(ValueError):
        fit_linear_probe(torch.randn(3, 2), labels, classes=3)
