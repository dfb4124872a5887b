"""`training eval` scores zero-shot on a checkpoint's native input: square resize, or, once the
run has trained phase-3 (NaFlex) steps, the HF export's processor preprocessing."""

import json

import pytest
import torch
from eval_set_writer import write_classification_set

from tests.training.export.run_fixture import write_run
from training.eval import hit_string
from training.eval.run import evaluate_checkpoint, trained_on_naflex
from training.eval.zeroshot import zeroshot_predictions
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        (None, 12, False),  # no run schedule: an import or a hand-written checkpoint
        ({"steps": 10, "phase3_start": 1.0}, 10, False),  # the run never reaches phase 3
        ({"steps": 10, "phase3_start": 0.5}, 5, False),  # steps 0-4 done: phase 3 not begun
        ({"steps": 10, "phase3_start": 0.5}, 6, True),  # step 5, phase 3's first, done
        ({"steps": 10, "phase2_start": 0.2, "phase3_start": 0.9}, 10, True),
    ],
)
def test_a_checkpoint_is_naflex_once_it_has_trained_a_phase_3_step(schedule, step, expected):
    config = {"model": {}} if schedule is None else {"model": {}, "train": {"schedule": schedule}}
    assert trained_on_naflex(config, step) is expected


def write_scheduled_run(tmp_path, model, phase3_start: float):
    run = tmp_path / f"run{phase3_start}"
    folder = write_run(run, model, step=10)
    config = json.loads((folder / "config.json").read_text())
    config["train"] = {"schedule": {"steps": 10, "phase3_start": phase3_start}}
    (folder / "config.json").write_text(json.dumps(config))
    return run


def test_zero_shot_of_a_naflex_checkpoint_uses_the_processor_input_and_reports_square_too(
    tmp_path,
):
    torch.manual_seed(3)
    model = SigLIP2(model_config("tiny", distill=None)).eval()
    dataset = tmp_path / "eval" / "zeroshot"
    labels = torch.tensor(write_classification_set(dataset, count=6))
    tokenizer = Tokenizer(context_length=model.cfg.text.context_length)
    results = {}
    for phase3_start in (0.5, 1.0):
        run = write_scheduled_run(tmp_path, model, phase3_start)
        report = evaluate_checkpoint(run, str(dataset.parent), ["zeroshot"])
        results[phase3_start] = report["results"]["zeroshot"]
    naflex, square = results[0.5], results[1.0]
    assert naflex["input"] == "naflex" and naflex["square_top1"] == square["top1"]
    # A square checkpoint's metrics are what they always were (and each image's outcome).
    assert set(square) == {
        "top1",
        "chance",
        "classes",
        "samples",
        "dataset",
        "seconds",
        "top1/hits",
    }
    for metrics, flag in ((naflex, True), (square, False)):
        predictions, read = zeroshot_predictions(model, tokenizer, str(dataset), naflex=flag)
        assert torch.equal(read, labels)
        assert metrics["top1"] == pytest.approx((predictions == labels).float().mean().item())
        assert metrics["top1/hits"] == hit_string((predictions == labels).numpy())
