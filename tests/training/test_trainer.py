import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from training.checkpoint import LATEST, MODEL_FILE, step_dir_name
from training.config import TrainArgs, from_dict
from training.metrics_log import read_metrics
from training.models.config import model_config
from training.trainer import train


def tiny_args(world, out, steps=6, **sections) -> TrainArgs:
    values = {
        "out": str(out),
        "model": {"preset": "tiny"},
        "data": {
            "text_shards": world.text_pattern,
            "grounding_shards": world.grounding_pattern,
            "batch_size": 8,
            "grounding_fraction": 0.25,
            "num_workers": 0,
        },
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "schedule": {"steps": steps},
        "checkpoint": {"every": 3, "keep": 5},
        "logging": {"every": 1, "tensorboard": False, "progress_bar": False},
    }
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    return from_dict(TrainArgs, values)


LOGGED = ("loss", "sigmoid", "locca", "lr", "grad_norm", "t", "b")


@pytest.fixture
def one_thread():
    """Multi-threaded CPU kernels reduce in a varying order (runs differ by ~1e-5); one thread
    makes two runs bit-identical, so the comparison below can be tight."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_run_resumed_after_a_crash_matches_the_uninterrupted_run(shard_world, tmp_path, one_thread):
    args = tiny_args(shard_world, tmp_path / "run", steps=4, checkpoint={"every": 2})
    train(args)
    checkpoints = tmp_path / "run" / "checkpoints"
    uninterrupted = read_metrics(tmp_path / "run" / "metrics.jsonl")
    final_weights = load_file(checkpoints / step_dir_name(4) / MODEL_FILE)

    # Crash during step 4: the step-2 checkpoint is the latest, the log already holds step 3.
    shutil.rmtree(checkpoints / step_dir_name(4))
    (checkpoints / LATEST).write_text(step_dir_name(2))
    log = tmp_path / "run" / "metrics.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:3]))
    train(args)

    # The resumed run dropped the killed segment's step 3 before logging it again.
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    resumed = read_metrics(log)
    for before, after in zip(uninterrupted, resumed):
        for key in LOGGED:
            assert after[key] == pytest.approx(before[key], rel=1e-6, abs=1e-7), (
                before["step"],
                key,
            )
    resumed_weights = load_file(checkpoints / step_dir_name(4) / MODEL_FILE)
    for name, tensor in final_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-6, atol=1e-7)


def test_every_step_trains_on_exactly_the_contrastive_share_and_logs_throughput(
    shard_world, tmp_path
):
    train(tiny_args(shard_world, tmp_path / "run", steps=2))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["contrastive_samples"] for r in records] == [6.0, 6.0]
    assert all(r["samples_per_s"] > 0 and "mfu" not in r for r in records)  # no MFU on CPU
    initial_b = model_config("tiny").init_logit_bias
    assert records[0]["t"] == pytest.approx(10.0, rel=1e-2)
    assert records[0]["b"] == pytest.approx(initial_b, abs=0.1)


@pytest.mark.slow
def test_training_on_the_tiny_world_lowers_both_losses(shard_world, tmp_path):
    # Logged from step 1, the loss the model starts at: by step 5 the sigmoid loss has already
    # fallen most of the way to this world's floor (~2.7 at batch 8).
    train(tiny_args(shard_world, tmp_path / "run", steps=30, logging={"every": 1}))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert records[0]["step"] == 1
    assert records[-1]["sigmoid"] < 0.7 * records[0]["sigmoid"]
    assert records[-1]["locca"] < 0.9 * records[0]["locca"]
