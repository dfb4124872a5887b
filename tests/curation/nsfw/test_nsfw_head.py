import numpy as np
import pytest
import torch

from curation.nsfw.head import (
    FitSettings,
    HeadSpec,
    NsfwHead,
    calibrated_threshold,
    evaluate,
    fit_head,
    head_from_bytes,
    head_to_bytes,
    load_head,
    save_head,
)


def separable(rows: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around two random directions (the unsafe concept and the rest), noisy
    enough that single coordinates overlap."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, dim))
    labels = rng.random(rows) < 0.3
    x = centres[labels.astype(int)] + rng.normal(scale=1.2, size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


FAST = FitSettings(hidden=(32, 16), epochs=150)


def test_a_head_fitted_on_separable_embeddings_classifies_held_out_ones():
    x, y = separable(1200)
    head = fit_head(x[:800], y[:800], FAST)
    metrics = evaluate(head, x[800:], y[800:])
    assert metrics["accuracy"] >= 0.97
    assert metrics["unsafe_recall"] >= 0.95 and metrics["false_removal_rate"] <= 0.02
    held_out = int(y[:800].sum() * 0.2) + int((~y[:800]).sum() * 0.2)  # 20% of each class
    assert head.spec.fit["holdout_rows"] == held_out and head.spec.fit["holdout_accuracy"] >= 0.95


def test_a_head_fitted_on_shuffled_labels_does_not_generalise():
    x, y = separable(1200)
    shuffled = np.random.default_rng(1).permutation(y)
    head = fit_head(x[:800], shuffled[:800], FAST)
    assert evaluate(head, x[800:], y[800:])["accuracy"] < 0.8


def test_save_and_load_give_the_same_probabilities_and_spec(tmp_path):
    x, y = separable(300)
    head = fit_head(x, y, FAST, scorer={"model_name": "tiny-clip"})
    path = str(tmp_path / "head.safetensors")
    save_head(head, path)
    loaded = load_head(path)
    assert loaded.spec == head.spec and loaded.spec.scorer == {"model_name": "tiny-clip"}
    np.testing.assert_array_equal(loaded.probabilities(x), head.probabilities(x))


def test_fitting_is_deterministic_per_seed():
    x, y = separable(300)
    first, again = fit_head(x, y, FAST, seed=3), fit_head(x, y, FAST, seed=3)
    other = fit_head(x, y, FAST, seed=4)
    assert head_to_bytes(first) == head_to_bytes(again)
    assert head_to_bytes(first) != head_to_bytes(other)


def test_a_file_whose_tensors_do_not_match_its_spec_is_refused():
    head = NsfwHead(HeadSpec(8, (4,)))
    data = head_to_bytes(head)
    wrong = NsfwHead(HeadSpec(8, (5,)))
    wrong.spec = HeadSpec(8, (4,))  # metadata claims 8 -> 4 -> 1, tensors are 8 -> 5 -> 1
    with pytest.raises(ValueError, match="do not match"):
        head_from_bytes(head_to_bytes(wrong))
    with pytest.raises(ValueError, match="not a safetensors"):
        head_from_bytes(b"abc")
    assert head_from_bytes(data).spec == head.spec


def test_probabilities_refuse_embeddings_of_another_width():
    head = NsfwHead(HeadSpec(8, (4,)))
    with pytest.raises(ValueError, match="expects"):
        head.probabilities(np.zeros((3, 9), np.float32))
    assert torch.isfinite(head(torch.zeros(2, 8))).all()


def test_fitting_needs_both_classes():
    x, _ = separable(50)
    with pytest.raises(ValueError, match="both"):
        fit_head(x, np.zeros(50, bool), FAST)


def test_the_calibrated_threshold_removes_at_most_the_allowed_share_of_safe_rows():
    p = np.array([0.9, 0.7, 0.7, 0.4, 0.2, 0.1, 0.05, 0.01, 0.01, 0.0], dtype=np.float32)
    for share, removed in ((0.0, 0), (0.1, 1), (0.15, 1), (0.2, 1), (0.3, 3), (0.95, 9)):
        threshold = calibrated_threshold(p, share)
        assert int((p >= threshold).sum()) == removed, (share, threshold)
        assert 0 < threshold < 1
    assert calibrated_threshold(p, 1.0) < 1e-30  # everything may go


def test_fitting_with_a_false_removal_target_stores_the_calibrated_threshold():
    x, y = separable(1200, seed=4)
    head = fit_head(
        x[:800], y[:800], FitSettings(hidden=(32, 16), epochs=150, max_false_removal=0.01)
    )
    assert head.spec.threshold != 0.5
    assert head.spec.fit["holdout_false_removal_rate"] <= 0.01
    default = fit_head(x[:800], y[:800], FAST)
    # The same fit (same seed): the calibrated threshold only moves the decision.
    np.testing.assert_array_equal(head.probabilities(x), default.probabilities(x))
    assert evaluate(head, x[800:], y[800:])["unsafe_recall"] >= 0.9
