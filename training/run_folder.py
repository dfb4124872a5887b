"""Find the checkpoint a user means by `--ckpt`: a run folder (its newest complete checkpoint),
a run's checkpoints/ folder, or one step folder."""
from __future__ import annotations

from pathlib import Path

from training.checkpoint import CONFIG_FILE, MODEL_FILE, latest_checkpoint


def resolve_checkpoint(path: str | Path) -> Path:
    """The step folder holding model.safetensors + config.json for `path`."""
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} has {MODEL_FILE} but no {CONFIG_FILE}")
        return path
    for root in (path / "checkpoints", path):
        if root.is_dir() and (folder := latest_checkpoint(root)) is not None:
            return folder
    raise FileNotFoundError(
        f"{path}: not a checkpoint (no {MODEL_FILE}), nor a run or checkpoints folder with a "
        "'latest' pointer")


def run_of_checkpoint(folder: Path) -> Path:
    """The run folder a step folder belongs to (RUN/checkpoints/step_N → RUN)."""
    return folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
