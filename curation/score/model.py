"""Load an open_clip model from a local weights file; never from a hub.

Accepted weights:
- `.safetensors` written by `save_random_weights` or by this project's exporter: the state dict,
  with metadata naming the open_clip architecture and (optionally) embedding its config JSON;
- an open_clip training checkpoint or state dict (`.pt`, `.pth`, `.bin`): `{"state_dict": ...}`
  (DDP's `module.` prefixes are stripped) or the bare state dict.
The architecture comes from, in order: an explicit model-config JSON (either a bare open_clip
model config or the exporter's `{"model_cfg": ..., "preprocess_cfg": ...}`), an
`open_clip_config.json` next to the weights, the config embedded in the weights' metadata, or
open_clip's built-in config of that name. The model is always created with `pretrained=None`.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation import fsio

if TYPE_CHECKING:
    import torch

RANDOM_INIT_KEY = "openvision_random_init"
MODEL_NAME_KEY = "open_clip_model"
MODEL_CONFIG_KEY = "open_clip_config"
SIDECAR_CONFIG_NAME = "open_clip_config.json"
SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own bound on its JSON header


class ScorerConfigError(ValueError):
    """The model name, config or weights cannot be turned into a scorer."""


@dataclass(frozen=True)
class ScorerSpec:
    """Everything needed to rebuild the same scorer in another process."""

    model_name: str
    weights: str
    model_config: str | None = None  # path of a JSON config; None = sidecar / embedded / built-in

    def to_record(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "weights": self.weights,
            "model_config": self.model_config,
        }


@dataclass
class LoadedScorer:
    model: torch.nn.Module
    preprocess: Any  # torchvision transform: PIL image -> float tensor [3, H, W]
    tokenizer: Any  # list[str] -> int tensor [n, context_length]
    image_size: int
    random_init: bool
    config: dict[str, Any]  # {"model_cfg": ..., "preprocess_cfg": ...}


def _read_json(path: str | Path, what: str) -> dict[str, Any]:
    try:
        return fsio.read_json(str(path), expect=dict)
    except (OSError, ValueError) as exc:
        raise ScorerConfigError(f"{what} {path}: cannot read JSON ({exc})") from exc


def _moved(path: str, folder: str | None) -> str:
    """`path`, or the same name inside `folder` when `path` is gone and that one exists: an export
    folder that was moved still names its old location (timm's `local-dir:` needs a path)."""
    if folder is None or Path(path).exists() or "://" in folder:
        return path
    candidate = Path(folder) / Path(path).name
    return str(candidate) if candidate.exists() else path


def _relocated(model_cfg: dict[str, Any], folder: str | None) -> dict[str, Any]:
    """The exported config's local paths against `folder`, the folder the config was read from:
    a relative tokenizer folder, and an absolute one or a timm trunk folder that moved there."""
    text_cfg, vision_cfg = dict(model_cfg["text_cfg"]), dict(model_cfg["vision_cfg"])
    if text_cfg.get("hf_tokenizer_name") and folder is not None:
        tokenizer = Path(text_cfg["hf_tokenizer_name"])
        if not tokenizer.is_absolute():  # our exports name it relative to the config's folder
            text_cfg["hf_tokenizer_name"] = str(Path(folder) / tokenizer)
        elif not tokenizer.is_dir() and (Path(folder) / "tokenizer.json").is_file():
            text_cfg["hf_tokenizer_name"] = folder
    timm_name = vision_cfg.get("timm_model_name") or ""
    if timm_name.startswith("local-dir:"):
        vision_cfg["timm_model_name"] = "local-dir:" + _moved(timm_name[10:], folder)
    return {**model_cfg, "text_cfg": text_cfg, "vision_cfg": vision_cfg}


def _as_full_config(raw: dict[str, Any], source: str, folder: str | None = None) -> dict[str, Any]:
    """Normalise a bare model config or an exporter config to {"model_cfg", "preprocess_cfg"};
    `folder` (local) is where it was read from."""
    if "model_cfg" in raw:
        full = {"model_cfg": raw["model_cfg"], "preprocess_cfg": raw.get("preprocess_cfg", {})}
    else:
        full = {"model_cfg": raw, "preprocess_cfg": {}}
    if "text_cfg" in full["model_cfg"] and "vision_cfg" in full["model_cfg"]:
        full["model_cfg"] = _relocated(full["model_cfg"], folder)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in full["model_cfg"]]
    if missing:
        raise ScorerConfigError(f"model config from {source} lacks {', '.join(missing)}")
    text_cfg = full["model_cfg"]["text_cfg"]
    hub_tokenizer = text_cfg.get("hf_tokenizer_name") and _local_tokenizer_dir(text_cfg) is None
    if hub_tokenizer or text_cfg.get("hf_model_name"):
        raise ScorerConfigError(
            f"model config from {source} needs a Hugging Face text model/tokenizer, which would be "
            "fetched from the hub; only configs with open_clip's built-in text tower work offline"
        )
    return full


def _local_tokenizer_dir(text_cfg: dict[str, Any]) -> Path | None:
    """The folder of tokenizer files an exported config names (`hf_tokenizer_name` = a local
    directory holding tokenizer.json), or None."""
    name = text_cfg.get("hf_tokenizer_name")
    folder = Path(name) if name else None
    return folder if folder is not None and (folder / "tokenizer.json").is_file() else None


def _safetensors_metadata(
    path: str, head: bytes, read_more: Callable[[int], bytes]
) -> dict[str, Any]:
    """The __metadata__ of a safetensors file from its first bytes: an 8-byte little-endian
    header length, then the JSON header; `read_more(n)` gives the next n bytes."""
    if len(head) < 8:
        raise ScorerConfigError(f"weights file {path}: too short for a safetensors header")
    length = int.from_bytes(head[:8], "little")
    if length > SAFETENSORS_MAX_HEADER:
        raise ScorerConfigError(
            f"weights file {path}: safetensors header of {length:,} bytes (at most "
            f"{SAFETENSORS_MAX_HEADER:,}): not a safetensors file"
        )
    try:
        header = json.loads(read_more(length))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScorerConfigError(
            f"weights file {path}: unreadable safetensors header ({exc})"
        ) from exc
    if not isinstance(header, dict):
        raise ScorerConfigError(f"weights file {path}: safetensors header is not a JSON object")
    return dict(header.get("__metadata__") or {})


def read_weights_metadata(path: str) -> dict[str, Any]:
    """The weights file's metadata (model name, embedded config, random-init flag) without its
    tensors where the format allows: a safetensors header is read alone; a torch checkpoint is
    loaded whole."""
    if not path.endswith(".safetensors"):
        return _read_weights(path)[1]
    if not fsio.exists(path):
        raise ScorerConfigError(f"weights file {path} does not exist")
    fs, local = fsio.filesystem(path)
    with fs.open(local, "rb") as handle:
        return _safetensors_metadata(path, handle.read(8), handle.read)


def _read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) from a safetensors file or a torch checkpoint (any fsspec URL)."""
    import torch

    if not fsio.exists(path):
        raise ScorerConfigError(f"weights file {path} does not exist")
    data = fsio.read_bytes(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load

        metadata = _safetensors_metadata(path, data[:8], lambda n: data[8 : 8 + n])
        return load(data), metadata
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ScorerConfigError(f"weights file {path}: not a torch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict):
        raise ScorerConfigError(
            f"weights file {path}: expected a dict, got {type(checkpoint).__name__}"
        )
    state = checkpoint.get("state_dict", checkpoint)
    metadata = {
        k: v
        for k, v in checkpoint.items()
        if k in (MODEL_NAME_KEY, MODEL_CONFIG_KEY, RANDOM_INIT_KEY)
    }
    state = {
        (k.removeprefix("module.")): v for k, v in state.items() if isinstance(v, torch.Tensor)
    }
    return state, metadata


def _local_folder(url: str | None) -> str | None:
    """The folder holding a local file (None for remote URLs)."""
    if not url or "://" in url:
        return None
    return str(Path(url).resolve().parent)


def resolve_config(
    model_name: str,
    model_config: str | None,
    weights: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The architecture: explicit JSON, sidecar JSON, embedded metadata, or open_clip built-in."""
    if model_config:
        return _as_full_config(
            _read_json(model_config, "model config"), model_config, _local_folder(model_config)
        )
    sidecar = fsio.join(posixpath.dirname(weights), SIDECAR_CONFIG_NAME) if weights else None
    if sidecar is not None and fsio.exists(sidecar):
        return _as_full_config(
            _read_json(sidecar, "model config"), str(sidecar), _local_folder(sidecar)
        )
    if metadata and metadata.get(MODEL_CONFIG_KEY):
        embedded = metadata[MODEL_CONFIG_KEY]
        raw = json.loads(embedded) if isinstance(embedded, str) else embedded
        return _as_full_config(raw, f"{weights} metadata", _local_folder(weights))
    import open_clip

    builtin = open_clip.get_model_config(model_name)
    if builtin is None:
        raise ScorerConfigError(
            f"model {model_name!r} is not an open_clip architecture and no config was given "
            f"(--model-config, {SIDECAR_CONFIG_NAME} beside the weights, or embedded metadata)"
        )
    return _as_full_config(builtin, f"open_clip built-in {model_name}")


def _create_from_config(config: dict[str, Any]) -> tuple[torch.nn.Module, Any, Any]:
    """Model, eval transform and tokenizer from a config dict, through open_clip's local-dir path."""
    import open_clip

    root_logger = logging.getLogger()
    level = root_logger.level
    # open_clip warns on the root logger that the folder has no weights: that is the intent here.
    root_logger.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="open_clip_cfg-") as folder:
        (Path(folder) / SIDECAR_CONFIG_NAME).write_text(json.dumps(config))
        # open_clip reads a local-dir model's HF tokenizer from that folder: copy the files in.
        tokenizer_dir = _local_tokenizer_dir(config["model_cfg"]["text_cfg"])
        for path in tokenizer_dir.glob("tokenizer*.json") if tokenizer_dir else ():
            shutil.copy(path, folder)
        name = f"local-dir:{folder}"
        # The folder holds no weights, so open_clip initialises randomly and fetches nothing.
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained_text=False, pretrained_image=False
        )
        tokenizer = open_clip.get_tokenizer(name)
    root_logger.setLevel(level)
    return model, preprocess, tokenizer


def _check_model_name(spec: ScorerSpec, metadata: dict[str, Any]) -> None:
    named = metadata.get(MODEL_NAME_KEY)
    if named and named != spec.model_name:
        raise ScorerConfigError(
            f"weights {spec.weights} were saved for model {named!r}, not {spec.model_name!r}"
        )


def scorer_config(spec: ScorerSpec, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config `load_scorer(spec)` builds its model from, without building it or reading
    the tensors of a safetensors file: what a process that only preprocesses needs.
    `metadata`: the weights' metadata when the caller has read it already."""
    if metadata is None:
        metadata = read_weights_metadata(spec.weights)
    _check_model_name(spec, metadata)
    return resolve_config(spec.model_name, spec.model_config, spec.weights, metadata)


def config_image_size(config: dict[str, Any]) -> int:
    """The model's square input side (the larger side of a non-square one)."""
    image_size = config["model_cfg"]["vision_cfg"].get("image_size", 224)
    return image_size if isinstance(image_size, int) else max(image_size)


# open_clip tries to import these at its own import (~1.6 s of a fresh process's ~5.8 s to a
# built ViT-S-32); only timm vision trunks and Hugging Face text towers or tokenizers use them.
OPTIONAL_BACKENDS = ("timm", "transformers")


def skip_unused_backends(specs: tuple[ScorerSpec, ...]) -> tuple[str, ...]:
    """In a process that loads no other models than `specs` (a scoring actor's own process):
    make the optional backends that none of their architectures uses unimportable, before
    open_clip is first imported, so its import skips them. Returns the names skipped.

    Never call it in a shared process: a later `import timm` there would fail. Any config
    that mentions timm or a Hugging Face part, or that comes from open_clip's built-in list
    (resolving it imports open_clip), skips nothing."""
    if "open_clip" in sys.modules:
        return ()
    described = [json.dumps(scorer_config(spec)["model_cfg"]) for spec in specs]
    if "open_clip" in sys.modules or any("timm" in t or '"hf_' in t for t in described):
        return ()
    skipped = tuple(name for name in OPTIONAL_BACKENDS if name not in sys.modules)
    for name in skipped:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    return skipped


def load_scorer(spec: ScorerSpec, device: str = "cpu") -> LoadedScorer:
    state, metadata = _read_weights(spec.weights)
    _check_model_name(spec, metadata)
    config = resolve_config(spec.model_name, spec.model_config, spec.weights, metadata)
    model, preprocess, tokenizer = _create_from_config(config)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise ScorerConfigError(
            f"weights {spec.weights} do not fit model {spec.model_name!r}: missing "
            f"{len(result.missing_keys)} tensors, e.g. {result.missing_keys[:3]}"
        )
    model.eval().to(device)
    random_init = flags_random(metadata)
    return LoadedScorer(
        model, preprocess, tokenizer, config_image_size(config), random_init, config
    )


def save_random_weights(
    model_name: str, path: str, model_config: str | None = None, seed: int = 0
) -> dict[str, Any]:
    """Initialise `model_name` randomly (seeded) and save it, flagged as random, to `path`."""
    import torch
    from safetensors.torch import save

    spec = ScorerSpec(model_name, path, model_config)
    config = resolve_config(model_name, model_config)
    torch.manual_seed(seed)
    model, _, _ = _create_from_config(config)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        MODEL_NAME_KEY: model_name,
        MODEL_CONFIG_KEY: json.dumps(config),
        RANDOM_INIT_KEY: "true",
        "seed": str(seed),
    }
    fsio.write_bytes(path, save(state, metadata=metadata))
    return {**spec.to_record(), "parameters": sum(v.numel() for v in state.values())}


def weights_are_random(weights: str) -> bool:
    """Whether the weights file says it is an untrained, randomly initialised model."""
    return flags_random(read_weights_metadata(weights))


def flags_random(metadata: dict[str, Any]) -> bool:
    """Whether a weights file's metadata flags it randomly initialised."""
    return str(metadata.get(RANDOM_INIT_KEY, "")).lower() in ("true", "1")
