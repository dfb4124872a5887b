import math

import pytest
import torch
from eval_set_writer import write_classification_set

from training.eval.knn import knn_accuracy, knn_predict
from training.models.config import model_config
from training.models.siglip import SigLIP2


def unit(*angles_deg):
    angles = torch.tensor(angles_deg) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def test_knn_votes_are_similarity_weighted():
    bank = unit(0, 10, 90)
    labels = torch.tensor([0, 0, 1])
    query = unit(60)
    # k=1: the nearest (90 deg, 30 away) is class 1.
    assert knn_predict(bank, labels, query, k=1, classes=2).tolist() == [1]
    # k=3: class 0 gets exp(cos50/T) + exp(cos60/T), class 1 exp(cos30/T); with T = 0.07 the
    # single closer neighbour outweighs the two farther ones.
    assert knn_predict(bank, labels, query, k=3, classes=2).tolist() == [1]
    # A flat temperature turns it into a majority vote: class 0 wins 2 to 1.
    assert knn_predict(bank, labels, query, k=3, classes=2, temperature=100.0).tolist() == [0]


def test_leave_one_out_never_lets_a_query_vote_for_itself():
    bank = unit(0, 5, 90)
    labels = torch.tensor([1, 0, 0])
    predicted = knn_predict(bank, labels, bank, k=1, classes=2, leave_one_out=True)
    assert predicted.tolist() == [0, 1, 0]  # 0 deg -> 5 deg (class 0); 5 deg -> 0 deg (class 1)


def test_leave_one_out_needs_two_images():
    with pytest.raises(ValueError, match="at least one memory image"):
        knn_predict(unit(0), torch.tensor([0]), unit(0), k=1, classes=1, leave_one_out=True)


def test_knn_accuracy_on_a_test_only_set_runs_leave_one_out(tmp_path):
    labels = write_classification_set(tmp_path / "shapes", count=6)
    torch.manual_seed(0)
    metrics = knn_accuracy(
        SigLIP2(model_config("tiny", distill=None)), str(tmp_path / "shapes"), ks=(1, 3)
    )
    assert metrics["memory_split"] == "test (leave-one-out)"
    assert metrics["samples"] == metrics["memory"] == len(labels) == 6
    assert metrics["chance"] == 0.5
    # Even random patch features keep colour, and colour decides the class here.
    assert metrics["top1@k1"] > metrics["chance"] and metrics["top1@k3"] > metrics["chance"]
