import math

import pytest
import torch
from eval_set_writer import write_segmentation_set

from training.eval.dense import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    patch_class_fractions,
    predict_masks,
    segmentation_probe,
    train_linear_probe,
)
from training.models.config import model_config
from training.models.siglip import SigLIP2


def test_confusion_and_iou_match_hand_counts():
    truth = torch.tensor([[0, 0, 1], [1, 2, 2]])
    predicted = torch.tensor([[0, 1, 1], [1, 2, 0]])
    confusion = confusion_matrix(predicted, truth, 4)
    # rows = truth, columns = prediction
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    ious = iou_per_class(confusion)
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    assert ious[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(ious[3])  # absent from truth and prediction: not averaged
    assert mean_iou(confusion) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_truth_ids_outside_the_classes_are_ignored():
    truth = torch.tensor([0, 1, 255])
    predicted = torch.tensor([0, 1, 1])
    assert confusion_matrix(predicted, truth, 2).tolist() == [[1, 0], [0, 1]]


def test_patch_class_fractions_average_each_patch():
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, 0, 0] = 1  # one of the top-left patch's 4 pixels
    mask[0, 2:, 2:] = 2  # the whole bottom-right patch
    fractions = patch_class_fractions(mask, grid=2, classes=3)
    assert fractions[0, 0, 0].tolist() == [0.75, 0.25, 0.0]
    assert fractions[0, 1, 1].tolist() == [0.0, 0.0, 1.0]
    assert fractions[0, 0, 1].tolist() == [1.0, 0.0, 0.0]


def test_probe_on_linearly_separable_patches_segments_perfectly():
    # Patch features carry their class as a one-hot direction plus noise.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (8, 4, 4), generator=generator)
    features = torch.nn.functional.one_hot(labels, 3).float() * 4
    features = torch.cat([features, torch.randn(8, 4, 4, 5, generator=generator)], dim=-1)
    targets = torch.nn.functional.one_hot(labels, 3).float()
    probe = train_linear_probe(features[:6].flatten(0, 2), targets[:6].flatten(0, 2))
    predicted = predict_masks(probe, features[6:], size=4)  # grid 4 -> 4 pixels: one per patch
    assert torch.equal(predicted, labels[6:])
    assert mean_iou(confusion_matrix(predicted, labels[6:], 3)) == 1.0


def test_segmentation_probe_beats_the_majority_floor_on_colour_classes(tmp_path):
    write_segmentation_set(tmp_path / "segmentation")
    torch.manual_seed(0)
    model = SigLIP2(model_config("tiny", distill=None))
    metrics = segmentation_probe(model, str(tmp_path / "segmentation"))
    # Test masks: a 32x32 square (a quarter) of class 1, then of class 2. Predicting background
    # everywhere gives IoU 0.75 for background and 0 for both squares.
    assert metrics["baseline_majority_mIoU"] == pytest.approx(0.75 / 3)
    assert metrics["probe_train_split"] == "train" and metrics["eval_images"] == 2
    assert metrics["mIoU"] > metrics["baseline_majority_mIoU"]
    assert set(metrics["iou_per_class"]) == {"background", "red square", "blue square"}
