import json
import random
from pathlib import Path

import numpy as np
import pytest
import s3fs
import torch
from safetensors.torch import load_file

from training.checkpoint import (
    LATEST,
    MODEL_FILE,
    STATE_DIR,
    TRAINER_FILE,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    saved_keys,
    step_dir_name,
)


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def _save(root, step, model, optimizer, keep=3):
    return save_checkpoint(
        root,
        step,
        model,
        optimizer,
        {"scheduler": {"last_epoch": step}},
        {"position": step},
        {"model": {"width": 8}},
        keep,
    )


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_latest_points_at_the_newest_checkpoint_and_old_ones_are_pruned(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    for step in (10, 20, 30):
        _save(tmp_path, step, model, optimizer, keep=2)
    assert (tmp_path / LATEST).read_text() == step_dir_name(30)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [step_dir_name(20), step_dir_name(30)]
    assert latest_checkpoint(tmp_path) == str(tmp_path / step_dir_name(30))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_loading_restores_weights_optimizer_state_and_every_rng(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    folder = _save(tmp_path, 5, model, optimizer)
    expected_draws = _draws()
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    other_model, other_optimizer = _model_and_optimizer(1)  # different weights and moments
    _draws()
    restored = load_checkpoint(folder, other_model, other_optimizer)

    assert _draws() == expected_draws
    for name, tensor in other_model.state_dict().items():
        assert torch.equal(tensor, weights[name])
    for mine, theirs in zip(optimizer.state.values(), other_optimizer.state.values()):
        assert torch.equal(mine["exp_avg"], theirs["exp_avg"])
    assert restored.trainer_state == {"step": 5, "scheduler": {"last_epoch": 5}}
    assert restored.data_state == {"position": 5}
    assert set(load_file(Path(folder) / MODEL_FILE)) == set(weights)


def test_latest_naming_an_incomplete_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / LATEST).write_text(step_dir_name(7))
    with pytest.raises(FileNotFoundError, match="step_00000007"):
        latest_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_a_checkpoint_of_another_world_size_restores_weights_but_leaves_data_and_rng_to_the_run(
    tmp_path,
):
    model, optimizer = _model_and_optimizer(0)
    folder = Path(_save(tmp_path, 1, model, optimizer))
    trainer = json.loads((folder / TRAINER_FILE).read_text())
    (folder / TRAINER_FILE).write_text(json.dumps({**trainer, "world_size": 2}))
    (folder / "data_rank00001.json").write_text(json.dumps({"position": 99}))
    other_model, other_optimizer = _model_and_optimizer(1)
    restored = load_checkpoint(str(folder), other_model, other_optimizer)
    assert restored.data_state is None
    assert restored.saved_world_size == 2
    assert restored.data_states == [{"position": 1}, {"position": 99}]
    for name, tensor in other_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name])


def test_each_rank_writes_its_state_through_dcp_and_the_export_weights_beside_it(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    folder = Path(_save(tmp_path, 3, model, optimizer))
    assert {p.name for p in (folder / STATE_DIR).iterdir()} == {".metadata", "__0_0.distcp"}
    assert {f"model.{k}" for k in model.state_dict()} <= saved_keys(str(folder))
    assert "optimizer.state.0.weight.exp_avg" in saved_keys(str(folder))  # by parameter name


def test_checkpoints_round_trip_through_s3(s3_bucket):
    model, optimizer = _model_and_optimizer(0)
    root = f"{s3_bucket}/run/checkpoints"
    for step in (1, 2, 3):
        _save(root, step, model, optimizer, keep=2)
    folder = latest_checkpoint(root)
    assert folder == f"{root}/{step_dir_name(3)}"
    fs = s3fs.S3FileSystem()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(root.removeprefix("s3://"))) == [
        LATEST,
        step_dir_name(2),
        step_dir_name(3),
    ]
    other_model, other_optimizer = _model_and_optimizer(1)
    restored = load_checkpoint(folder, other_model, other_optimizer)
    assert restored.trainer_state["step"] == 3
    for name, tensor in other_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name])
    weights, config = load_model_weights(folder)
    assert config == {"model": {"width": 8}}
    assert set(weights) == set(model.state_dict())
