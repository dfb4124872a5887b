"""Checkpoints: everything needed to continue a run exactly, one folder per saved step.

    OUT/checkpoints/step_00001000/
        model.safetensors      full (unsharded) weights, loadable without this code
        config.json            model config + the run's TrainArgs
        optimizer.pt           full optimizer state, keyed by parameter name
        trainer.json           step and counters
        teacher.safetensors    phase 2 only: the EMA teacher and the frozen Gram teacher
        gram_teacher.safetensors   (any extra module the trainer passes, by name)
        data_rank00000.json    this rank's loader position (one file per rank)
        rng_rank00000.pt       python / numpy / torch (and CUDA) RNG states per rank
    OUT/checkpoints/latest     name of the newest complete checkpoint

`latest` is replaced atomically (temp file + rename) only after every rank has written its
files, so a run killed mid-save resumes from the previous complete checkpoint. Weights and
optimizer state go through torch.distributed.checkpoint's state-dict helpers, which gather
FSDP2-sharded tensors into full ones and map optimizer state to parameter names, so a checkpoint
does not depend on the parallelism or world size that wrote it (the data position does: resume
with the same number of ranks and loader workers).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

LATEST = "latest"
MODEL_FILE, CONFIG_FILE, OPTIMIZER_FILE, TRAINER_FILE = (
    "model.safetensors",
    "config.json",
    "optimizer.pt",
    "trainer.json",
)


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _full_state_options() -> StateDictOptions:
    # cpu_offload keeps a gathered so400m off the accelerator; in a single process there is
    # nothing to gather, and the helpers' rank-0-only offload needs a process group.
    return StateDictOptions(full_state_dict=True, cpu_offload=_distributed())


def write_json_atomic(path: Path, payload: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(temporary, path)


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    # Fresh contiguous CPU copies: safetensors refuses tensors that share storage.
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}, path)


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    data_state: dict[str, Any],
    config: dict[str, Any],
    keep: int,
    extra_models: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Collective under torch.distributed: every rank must call it at the same step.
    `extra_models` (e.g. phase 2's teachers) are saved as NAME.safetensors beside the model."""
    rank = _rank()
    folder = root / step_dir_name(step)
    options = _full_state_options()
    weights = get_model_state_dict(model, options=options)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
    extra_weights = {
        name: get_model_state_dict(module, options=options)
        for name, module in (extra_models or {}).items()
    }
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(weights, folder / MODEL_FILE)
        for name, state in extra_weights.items():
            save_weights(state, folder / f"{name}.safetensors")
        torch.save(optimizer_state, folder / OPTIMIZER_FILE)
        write_json_atomic(folder / CONFIG_FILE, config)
        write_json_atomic(folder / TRAINER_FILE, {"step": step, **trainer_state})
    _barrier()  # the folder exists before other ranks write into it
    write_json_atomic(folder / f"data_rank{rank:05d}.json", data_state)
    torch.save(rng_state(), folder / f"rng_rank{rank:05d}.pt")
    _barrier()  # every rank's files are on disk before the checkpoint becomes `latest`
    if rank == 0:
        pointer = root / LATEST
        temporary = pointer.with_name(f".{LATEST}.tmp-{os.getpid()}")
        temporary.write_text(folder.name)
        os.replace(temporary, pointer)
        prune_checkpoints(root, keep)
    return folder


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the `keep` newest complete checkpoints (never the one `latest` names)."""
    latest = (root / LATEST).read_text().strip()
    folders = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name <= latest)
    for old in folders[: max(len(folders) - keep, 0)]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.exists():
        return None
    folder = root / pointer.read_text().strip()
    if not (folder / TRAINER_FILE).exists():
        raise FileNotFoundError(f"{pointer} names {folder.name}, which is incomplete or missing")
    return folder


@dataclass
class Restored:
    folder: Path
    trainer_state: dict[str, Any]
    data_state: dict[str, Any]


def forget_unsaved_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved_names: set[str]
) -> None:
    """Drop the state of parameters the checkpoint had none for. set_optimizer_state_dict first
    initialises every parameter's state with a zero-gradient step (e.g. Adam's step count = 1);
    left in place, that state would make the first phase-2 update of a resumed run differ from
    the uninterrupted run, where those parameters start with no state at all."""
    for name, param in getattr(model, "module", model).named_parameters():
        if name not in saved_names:
            optimizer.state.pop(param, None)


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> Restored:
    """Load weights (and optimizer state) into already-built, already-wrapped objects and
    restore this rank's RNG states. Collective under torch.distributed."""
    rank = _rank()
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, load_file(folder / MODEL_FILE), options=options)
    if optimizer is not None:
        state = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        # Not strict: parameters that never received a gradient (e.g. the phase-2 mask token
        # during phase 1) have no optimizer state to restore.
        set_optimizer_state_dict(
            model, optimizer, state, options=StateDictOptions(full_state_dict=True, strict=False)
        )
        forget_unsaved_optimizer_state(model, optimizer, set(state["state"]))
    data_file = folder / f"data_rank{rank:05d}.json"
    if not data_file.exists():
        raise FileNotFoundError(
            f"{data_file} missing: the checkpoint was written by fewer ranks than this run has"
        )
    set_rng_state(torch.load(folder / f"rng_rank{rank:05d}.pt", weights_only=True))
    return Restored(
        folder, json.loads((folder / TRAINER_FILE).read_text()), json.loads(data_file.read_text())
    )


def has_extra_model(folder: Path, name: str) -> bool:
    return (folder / f"{name}.safetensors").exists()


def load_extra_models(folder: Path, models: dict[str, torch.nn.Module]) -> None:
    """Load NAME.safetensors into each already-built module. Collective under torch.distributed."""
    options = StateDictOptions(full_state_dict=True)
    for name, module in models.items():
        path = folder / f"{name}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: the checkpoint has no {name} weights")
        set_model_state_dict(module, load_file(path), options=options)


def load_model_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and config of a checkpoint, for evaluation and export (no trainer needed)."""
    return load_file(folder / MODEL_FILE), json.loads((folder / CONFIG_FILE).read_text())


def load_trained_model(folder: Path, device: torch.device | str = "cpu"):
    """A SigLIP2 with a checkpoint's weights, in eval mode."""
    from training.models.config import ModelConfig
    from training.models.siglip import SigLIP2

    weights, config = load_model_weights(folder)
    model = SigLIP2(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(weights)
    return model.to(device).eval()
