"""A run folder in the layout the trainer writes, for export and eval tests:
RUN/checkpoints/step_N/{model.safetensors, config.json, trainer.json} + RUN/checkpoints/latest."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from training.models.siglip import SigLIP2


def write_run(run: Path, model: SigLIP2, step: int = 7) -> Path:
    folder = run / "checkpoints" / f"step_{step:08d}"
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
    )
    (folder / "config.json").write_text(json.dumps({"model": model.cfg.to_dict()}))
    (folder / "trainer.json").write_text(json.dumps({"step": step}))
    (run / "checkpoints" / "latest").write_text(folder.name)
    return folder
