"""Find the checkpoint a user means by `--ckpt`: a run folder (its newest complete checkpoint),
a run's checkpoints/ folder, or one step folder; local, or an fsspec URL (s3://…), whose step
folder's weights, config and tokenizer are copied to a local cache for eval and export."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file

from training import run_storage
from training.checkpoint import CONFIG_FILE, MODEL_FILE, TRAINER_FILE, latest_checkpoint
from training.models.config import ModelConfig
from training.models.siglip import SigLIP2
from training.tokenizer import DEFAULT_BOX_BINS, Tokenizer

# config.json key naming a tokenizer.json beside the weights (imported SigLIP 2 checkpoints).
TOKENIZER_FILE_KEY = "tokenizer_file"
# Phase-2 self-distillation heads: training-only, never used by evaluation or export.
_TRAINING_ONLY_PREFIX = "distill_heads."


def resolve_checkpoint(path: str | Path) -> Path:
    """The local step folder holding model.safetensors + config.json for `path`."""
    if not run_storage.is_local(path):
        return _cached_remote_checkpoint(str(path))
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} has {MODEL_FILE} but no {CONFIG_FILE}")
        return path
    for root in (path / "checkpoints", path):
        if root.is_dir() and (folder := latest_checkpoint(root)) is not None:
            return Path(folder)
    raise FileNotFoundError(
        f"{path}: not a checkpoint (no {MODEL_FILE}), nor a run or checkpoints folder with a "
        "'latest' pointer"
    )


def _cached_remote_checkpoint(url: str) -> Path:
    """Copy what eval and export read of a remote checkpoint (not the DCP training state) to
    RUN's local mirror (see run_storage.local_mirror), once per step."""
    if run_storage.exists(run_storage.join(url, MODEL_FILE)):
        folder = url.rstrip("/")
    else:
        roots = (run_storage.join(url, "checkpoints"), url)
        folder = next((f for root in roots if (f := latest_checkpoint(root)) is not None), None)
        if folder is None:
            raise FileNotFoundError(f"{url}: not a checkpoint, nor a run or checkpoints folder")
    run, step = folder.rsplit("/", 2)[0], folder.rsplit("/", 1)[1]
    local = run_storage.local_mirror(run) / "checkpoints" / step
    config = json.loads(run_storage.read_text(run_storage.join(folder, CONFIG_FILE)))
    names = [MODEL_FILE, CONFIG_FILE, TRAINER_FILE] + (
        [config[TOKENIZER_FILE_KEY]] if config.get(TOKENIZER_FILE_KEY) else []
    )
    for name in names:
        remote, partial = run_storage.join(folder, name), local / f".{name}.part"
        if not (local / name).exists() and run_storage.exists(remote):
            run_storage.download(remote, partial)
            partial.rename(local / name)
    return local


def run_of_checkpoint(folder: Path) -> Path:
    """The run folder a step folder belongs to (RUN/checkpoints/step_N → RUN)."""
    return folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent


def load_encoder(folder: Path, device: str = "cpu") -> SigLIP2:
    """The towers, t, b and the LocCa decoder of a checkpoint, in eval mode, loaded strictly;
    the distillation heads are left out, so evaluation and export read checkpoints whose
    phase-2 head layout has since changed."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    cfg = dataclasses.replace(ModelConfig.from_dict(config["model"]), distill=None)
    weights = {
        key: value
        for key, value in load_file(folder / MODEL_FILE).items()
        if not key.startswith(_TRAINING_ONLY_PREFIX)
    }
    model = SigLIP2(cfg)
    model.load_state_dict(weights)
    return model.to(device).eval()


def tokenizer_for_checkpoint(folder: Path, context_length: int) -> Tokenizer:
    """The tokenizer a checkpoint's text tower reads: the tokenizer.json its config names (an
    imported SigLIP 2 keeps its own), else the one the run trained with (train.model.tokenizer:
    a path, or the name of one shipped with the trainer; train.model.box_bins), else the default
    CLIP BPE."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    if name := config.get(TOKENIZER_FILE_KEY):
        return Tokenizer.from_file(folder / name, context_length=context_length)
    trained_with = config.get("train", {}).get("model", {})
    options = {
        "context_length": context_length,
        "box_bins": trained_with.get("box_bins", DEFAULT_BOX_BINS),
    }
    if trained_with.get("tokenizer"):
        return Tokenizer.from_file(trained_with["tokenizer"], **options)
    return Tokenizer(**options)
