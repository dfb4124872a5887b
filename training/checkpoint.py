"""Checkpoints: everything needed to continue a run exactly, one folder per saved step, at any
fsspec URL (a local path, s3://bucket/run/checkpoints, gs://...).

    OUT/checkpoints/step_00001000/
        state/                 torch.distributed.checkpoint (DCP): `.metadata` plus one
                               `__R_0.distcp` file per rank: model, optimizer state and any
                               extra module (phase 2's teachers), each rank writing its own
                               FSDP2 shards; DCP reshards on load, so any world size resumes
        model.safetensors      full (unsharded) weights, loadable without this code (eval and
                               export read this one)
        config.json            model config + the run's TrainArgs
        trainer.json           step, counters, and the world size that wrote the checkpoint
        data_rank00000.json    this rank's loader position (one file per rank)
        rng_rank00000.pt       python / numpy / torch (and CUDA) RNG states per rank
    OUT/checkpoints/latest     name of the newest complete checkpoint

`latest` is replaced atomically (temp file + rename on disk, one PUT on object stores) only
after every rank has written its files, so a run killed mid-save resumes from the previous
complete checkpoint. The data position and RNG states belong to a rank: a resume on another
number of ranks restores weights, optimizer and schedule exactly, starts the data on a new
epoch (see ResumableLoader.continue_after) and reseeds each rank from (seed, rank, step).
"""

from __future__ import annotations

import io
import json
import os
import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from training import run_storage

if TYPE_CHECKING:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

# torch.distributed.checkpoint (DCP) is imported by the functions that read or write the DCP
# state, not here: it pulls in torch.distributed.tensor (~0.6 s a process on 2 cores), and
# eval and export, which read only model.safetensors and the JSON files, never need it.

LATEST = "latest"
MODEL_FILE, CONFIG_FILE, TRAINER_FILE, STATE_DIR = (
    "model.safetensors",
    "config.json",
    "trainer.json",
    "state",
)
MODEL_KEY, OPTIMIZER_KEY = "model", "optimizer"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _world_size() -> int:
    return dist.get_world_size() if _distributed() else 1


def _barrier() -> None:
    if _distributed():
        dist.barrier()


@contextmanager
def _single_process_quietly():
    """DCP warns that it assumes a single process when there is no process group; that is meant."""
    with warnings.catch_warnings():
        if not _distributed():
            warnings.filterwarnings("ignore", "torch.distributed is .*single process", UserWarning)
        yield


def _full_state_options() -> StateDictOptions:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # cpu_offload keeps a gathered so400m off the accelerator; in a single process there is
    # nothing to gather, and the helpers' rank-0-only offload needs a process group.
    return StateDictOptions(full_state_dict=True, cpu_offload=_distributed())


def write_json_atomic(path: Path | str, payload: Any) -> None:
    run_storage.write_text(path, json.dumps(payload, indent=1, sort_keys=True))


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


def weights_bytes(weights: dict[str, torch.Tensor]) -> bytes:
    # Fresh contiguous CPU copies: safetensors refuses tensors that share storage.
    return save_safetensors(
        {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}
    )


def save_weights(weights: dict[str, torch.Tensor], path: Path | str) -> None:
    run_storage.write_bytes(path, weights_bytes(weights))


def _torch_bytes(payload: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _sharded_state(
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """The DCP state: each rank's own shards (DTensors under FSDP2), keyed by parameter name.
    The optimizer's state is keyed by the names of `modules[MODEL_KEY]`'s parameters."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    state = {name: get_model_state_dict(module) for name, module in modules.items()}
    if optimizer is not None:
        state[OPTIMIZER_KEY] = get_optimizer_state_dict(modules[MODEL_KEY], optimizer)
    return state


def save_checkpoint(
    root: Path | str,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    data_state: dict[str, Any],
    config: dict[str, Any],
    keep: int,
    extra_models: dict[str, torch.nn.Module] | None = None,
) -> str:
    """Collective under torch.distributed: every rank must call it at the same step.
    `extra_models` (e.g. phase 2's teachers) are saved in the DCP state under their names.
    Returns the step folder's URL."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    rank = _rank()
    folder = run_storage.join(root, step_dir_name(step))
    extra_models = extra_models or {}
    with _single_process_quietly():
        dcp.save(
            _sharded_state({MODEL_KEY: model, **extra_models}, optimizer),
            # Object stores have no fsync; an upload is durable once it completes.
            storage_writer=FsspecWriter(
                run_storage.join(folder, STATE_DIR), sync_files=run_storage.is_local(folder)
            ),
            no_dist=not _distributed(),
        )
    weights = get_model_state_dict(model, options=_full_state_options())
    if rank == 0:
        save_weights(weights, run_storage.join(folder, MODEL_FILE))
        write_json_atomic(run_storage.join(folder, CONFIG_FILE), config)
        trainer = {"step": step, **trainer_state, "world_size": _world_size()}
        write_json_atomic(run_storage.join(folder, TRAINER_FILE), trainer)
    write_json_atomic(run_storage.join(folder, f"data_rank{rank:05d}.json"), data_state)
    run_storage.write_bytes(
        run_storage.join(folder, f"rng_rank{rank:05d}.pt"), _torch_bytes(rng_state())
    )
    _barrier()  # every rank's files are written before the checkpoint becomes `latest`
    if rank == 0:
        run_storage.write_text(run_storage.join(root, LATEST), os.path.basename(folder))
        prune_checkpoints(root, keep)
    return folder


def prune_checkpoints(root: Path | str, keep: int) -> None:
    """Delete all but the `keep` newest complete checkpoints (never the one `latest` names)."""
    latest = run_storage.read_text(run_storage.join(root, LATEST)).strip()
    folders = [n for n in run_storage.list_names(root) if n.startswith("step_") and n <= latest]
    for old in folders[: max(len(folders) - keep, 0)]:
        if old != latest:
            run_storage.remove(run_storage.join(root, old))


def latest_checkpoint(root: Path | str) -> str | None:
    """The URL of the newest complete checkpoint under `root`, or None if it has none."""
    pointer = run_storage.join(root, LATEST)
    if not run_storage.exists(pointer):
        return None
    name = run_storage.read_text(pointer).strip()
    folder = run_storage.join(root, name)
    if not run_storage.exists(run_storage.join(folder, TRAINER_FILE)):
        raise FileNotFoundError(f"{pointer} names {name}, which is incomplete or missing")
    return folder


@dataclass
class Restored:
    folder: str
    trainer_state: dict[str, Any]
    # This rank's loader position, or None when the checkpoint was written by another number
    # of ranks (then `data_states` holds every saving rank's, for ResumableLoader.continue_after).
    data_state: dict[str, Any] | None
    data_states: list[dict[str, Any]]
    saved_world_size: int


def forget_unsaved_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved_names: set[str]
) -> None:
    """Drop the state of parameters the checkpoint had none for. The state-dict helpers first
    initialise every parameter's state with a zero-gradient step (e.g. Adam's step count = 1);
    left in place, that state would make the first phase-2 update of a resumed run differ from
    the uninterrupted run, where those parameters start with no state at all."""
    for name, param in getattr(model, "module", model).named_parameters():
        if name not in saved_names:
            optimizer.state.pop(param, None)


def saved_keys(folder: str) -> set[str]:
    """The flattened keys of a checkpoint's DCP state ("model.vision.…", "optimizer.state.…")."""
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

    metadata = FsspecReader(run_storage.join(folder, STATE_DIR)).read_metadata()
    return set(metadata.state_dict_metadata)


def _optimizer_state_names(keys: set[str]) -> set[str]:
    prefix = f"{OPTIMIZER_KEY}.state."
    return {key[len(prefix) :].rsplit(".", 1)[0] for key in keys if key.startswith(prefix)}


def _load_sharded(
    folder: str,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Fill `modules` (by their names in the checkpoint) and the optimizer of
    `modules[MODEL_KEY]` from the DCP state, resharded to this run's ranks."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    keys = saved_keys(folder)
    state = _sharded_state(modules, optimizer)
    for name in modules:
        missing = sorted(k for k in state[name] if f"{name}.{k}" not in keys)
        if missing:
            raise KeyError(f"{folder} has no {name} weights for {missing[:3]}")
    # Partial: parameters that never received a gradient (e.g. the phase-2 mask token during
    # phase 1) have no optimizer state to restore.
    with _single_process_quietly():
        dcp.load(
            state,
            storage_reader=FsspecReader(run_storage.join(folder, STATE_DIR)),
            planner=DefaultLoadPlanner(allow_partial_load=True),
            no_dist=not _distributed(),
        )
    for name, module in modules.items():
        set_model_state_dict(module, state[name])
    if optimizer is not None:
        model = modules[MODEL_KEY]
        set_optimizer_state_dict(
            model, optimizer, state[OPTIMIZER_KEY], options=StateDictOptions(strict=False)
        )
        forget_unsaved_optimizer_state(model, optimizer, _optimizer_state_names(keys))


def load_checkpoint(
    folder: Path | str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> Restored:
    """Load weights (and optimizer state) into already-built, already-wrapped objects (DCP
    reshards them to this run's ranks) and restore this rank's RNG states when the checkpoint
    was written by as many ranks. Collective under torch.distributed."""
    folder = str(folder)
    rank, world_size = _rank(), _world_size()
    _load_sharded(folder, {MODEL_KEY: model}, optimizer)
    trainer_state = json.loads(run_storage.read_text(run_storage.join(folder, TRAINER_FILE)))
    saved_world_size = trainer_state.pop("world_size", 1)
    data_states = [
        json.loads(run_storage.read_text(run_storage.join(folder, f"data_rank{r:05d}.json")))
        for r in range(saved_world_size)
    ]
    if saved_world_size == world_size:
        rng = run_storage.read_bytes(run_storage.join(folder, f"rng_rank{rank:05d}.pt"))
        set_rng_state(torch.load(io.BytesIO(rng), weights_only=True))
        data_state = data_states[rank]
    else:
        data_state = None  # and the RNG left to the caller to reseed
    return Restored(folder, trainer_state, data_state, data_states, saved_world_size)


def has_extra_model(folder: Path | str, name: str) -> bool:
    return any(key.startswith(f"{name}.") for key in saved_keys(str(folder)))


def load_extra_models(folder: Path | str, models: dict[str, torch.nn.Module]) -> None:
    """Load each already-built module from the checkpoint's DCP state under its name.
    Collective under torch.distributed."""
    _load_sharded(str(folder), models)


def saved_module_weights(folder: Path | str, name: str = MODEL_KEY) -> dict[str, torch.Tensor]:
    """The full weights of one module of a checkpoint's DCP state (e.g. "teacher"), gathered
    from every rank's shards in this one process, without building the module."""
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    with _single_process_quietly():
        state = _load_state_dict_from_keys(
            keys={name}, storage_reader=FsspecReader(run_storage.join(folder, STATE_DIR))
        )
    return state[name]


def load_model_weights(folder: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and config of a checkpoint, for evaluation and export (no trainer needed)."""
    weights = load_safetensors(run_storage.read_bytes(run_storage.join(folder, MODEL_FILE)))
    return weights, json.loads(run_storage.read_text(run_storage.join(folder, CONFIG_FILE)))


def load_trained_model(folder: Path | str, device: torch.device | str = "cpu"):
    """A SigLIP2 with a checkpoint's weights, in eval mode."""
    from training.models.config import ModelConfig
    from training.models.siglip import SigLIP2

    weights, config = load_model_weights(folder)
    model = SigLIP2(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(weights)
    return model.to(device).eval()
