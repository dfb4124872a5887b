"""One checkpoint of a randomly initialised tiny model, shared by the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.export.run_fixture import write_run
from training.models.config import model_config
from training.models.siglip import SigLIP2


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, SigLIP2]:
    torch.manual_seed(5)
    model = SigLIP2(model_config("tiny")).eval()
    run = tmp_path_factory.mktemp("run")
    write_run(run, model)
    return run, model
