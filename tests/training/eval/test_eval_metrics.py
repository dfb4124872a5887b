import numpy as np
import pytest
import torch

from training.eval import hit_string, read_hit_string
from training.eval.grounding import accuracy_at, box_iou, centred_box
from training.eval.retrieval import recall_at_k


def test_box_iou_matches_hand_computed_overlaps():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0
    assert box_iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(0.0625 / 0.4375)


def test_accuracy_counts_missing_predictions_as_misses():
    truth = [(0, 0, 0.5, 0.5)] * 3
    assert accuracy_at([(0, 0, 0.5, 0.5), None, (0.5, 0.5, 1, 1)], truth) == pytest.approx(1 / 3)


def test_centred_box_has_the_mean_true_size():
    assert centred_box([(0, 0, 0.2, 0.4), (0.5, 0.5, 0.9, 0.7)]) == pytest.approx(
        (0.35, 0.35, 0.65, 0.65)
    )


def test_recall_with_two_captions_per_image():
    # images 0, 1; captions 0, 1 belong to image 0, caption 2 to image 1
    similarity = torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.3, 0.1]])
    metrics = recall_at_k(similarity, torch.tensor([0, 0, 1]), ks=(1, 2))
    # text→image top-1: caption 0 → 0 ✓, caption 1 → 1 ✗, caption 2 → 0 ✗
    assert metrics["text_to_image_R@1"] == pytest.approx(1 / 3)
    assert metrics["text_to_image_R@2"] == 1.0
    # image→text top-1: image 0 → caption 0 ✓; image 1 → caption 1 (image 0's) ✗
    assert metrics["image_to_text_R@1"] == 0.5
    assert metrics["image_to_text_R@2"] == 0.5  # image 1's top 2 are captions 1 and 0


def test_an_identical_caption_is_a_correct_answer_for_every_image_that_has_it():
    # images 0, 1, 2 captioned "a star", "a star", "a ring"; each caption read from its own image
    similarity = torch.tensor([[0.1, 0.9, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 0.2]])
    owner = torch.tensor([0, 1, 2])
    own_only = recall_at_k(similarity, owner, ks=(1,))
    shared = recall_at_k(similarity, owner, ks=(1,), captions=["a star", "a star", "a ring"])
    # text→image: caption 0 retrieves image 1 and caption 1 image 0, both "a star"
    assert own_only["text_to_image_R@1"] == pytest.approx(1 / 3)
    assert shared["text_to_image_R@1"] == 1.0
    # image→text: image 0 retrieves caption 1 ("a star", read from image 1)
    assert own_only["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert shared["image_to_text_R@1"] == 1.0
    # a different caption is still a miss, and distinct captions give the usual recall
    swapped = recall_at_k(similarity, owner, ks=(1,), captions=["a star", "a moon", "a ring"])
    assert swapped == own_only


def test_recall_with_two_captions_per_image_is_the_same_given_the_captions():
    similarity = torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.3, 0.1]])
    owner = torch.tensor([0, 0, 1])
    assert recall_at_k(similarity, owner, ks=(1, 2), captions=["a", "b", "c"]) == recall_at_k(
        similarity, owner, ks=(1, 2)
    )


def test_recall_stores_each_captions_top1_outcome_in_order():
    similarity = torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.3, 0.1]])
    metrics = recall_at_k(similarity, torch.tensor([0, 0, 1]), ks=(1,))
    # caption 0 -> image 0 (right), caption 1 -> image 1 (wrong), caption 2 -> image 0 (wrong)
    assert metrics["text_to_image_R@1/hits"] == "100"
    assert read_hit_string("100").tolist() == [True, False, False]
    assert hit_string(np.array([[True], [False]])) == "10"
    with pytest.raises(ValueError, match="only 0s and 1s"):
        read_hit_string("10x")
