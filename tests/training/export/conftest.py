"""A run folder holding one checkpoint of a randomly initialised tiny model, in the layout the
trainer writes (RUN/checkpoints/step_N/{model.safetensors, config.json, trainer.json} + latest)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training.models.config import model_config
from training.models.siglip import SigLIP2


def write_run(run: Path, model: SigLIP2, step: int = 7) -> Path:
    folder = run / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model": model.cfg.to_dict()}))
    (folder / "trainer.json").write_text(json.dumps({"step": step}))
    (run / "checkpoints" / "latest").write_text(folder.name)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, SigLIP2]:
    torch.manual_seed(5)
    model = SigLIP2(model_config("tiny")).eval()
    run = tmp_path_factory.mktemp("run")
    write_run(run, model)
    return run, model
