"""Export a trained SigLIP2 as an open_clip model folder (open_clip 3.3, offline).

    OUT/open_clip_config.json        {"model_cfg", "preprocess_cfg"}: a CustomTextCLIP
    OUT/open_clip_model.safetensors  the state dict in open_clip's layout
    OUT/timm_vision/config.json      the vision trunk for timm's `local-dir:` loader, unless
                                     timm registers an architecture equal to it
    OUT/tokenizer.json, tokenizer_config.json   our tokenizer (see tokenizer_files.py)

`open_clip.create_model_and_transforms("local-dir:OUT")` and `open_clip.get_tokenizer(
"local-dir:OUT")` rebuild the model, its eval transform and its tokenizer, and give our
embeddings. The vision tower is a timm ViT, since timm's ViT with `global_pool="map"` is the
SigLIP layout (linear patch embedding with bias, no class token, MAP head with residual MLP).
open_clip's own ViT cannot replace it: it always prepends a class token, which every patch
attends to in every block (a patch-embedding bias could be folded into the position embedding,
a class token cannot be made inert), and its attentional pooler has no MLP after the attention.

open_clip names the timm trunk by `vision_cfg.timm_model_name` alone: it passes timm no
architecture arguments (only pooling, head and drop rates), and its vision config has no field
for them. When our trunk is exactly one that timm registers (same modules, sizes, activation,
LayerNorm epsilon, pooling and position grid: the b16 preset is `vit_base_patch16_siglip_256`,
whose exact GELU b16 uses for that reason, and so400m is `vit_so400m_patch16_siglip_256`), the
config names it and the folder holds no path at all: moved anywhere, it loads as it is. Otherwise
(tiny: no registered ViT has its sizes; any trunk with other sizes or a tanh GELU where timm's
entry has the exact one) the trunk's sizes live in OUT/timm_vision/config.json for timm's
`local-dir:` loader. open_clip resolves only the weights and the tokenizer against
the export folder and hands the trunk's name to timm verbatim, and timm resolves a `local-dir:`
path against the working directory, so the config names that folder by absolute path: after a
move open_clip needs it re-exported or vision_cfg.timm_model_name edited, while the curation
scorer finds the trunk beside the config it reads. The tokenizer folder is named relative to
the config (".").

The position grid is resized once to the export resolution (image_size / patch_size patches per
side) with our own resize, so the fixed-size timm model sees exactly what ours sees there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from training.export import require_siglip_layout
from training.export.tokenizer_files import save_tokenizer_files
from training.models.config import ModelConfig
from training.models.vision import resize_position_grid
from training.tokenizer import Tokenizer

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
TIMM_FOLDER = "timm_vision"
# The name the curation scorer checks against the weights' metadata.
MODEL_NAME = "openvision-siglip2"
# A timm SigLIP ViT entry point: no class token, MAP pooling; every size is overridden.
_TIMM_ARCHITECTURE = "vit_base_patch16_siglip_256"
# timm builds its LayerNorms with this epsilon; it cannot be set from a config.
_TIMM_LAYER_NORM_EPS = 1e-6
# Our preprocessing (training.data.samples.decode_image): squash-resize, bilinear, to [-1, 1].
PREPROCESS = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bilinear",
    "resize_mode": "squash",
}


def _mlp_ratio(width: int, mlp_dim: int) -> float:
    """A ratio r with int(width * r) == mlp_dim (timm and open_clip size MLPs that way); the
    plain quotient can land just below, e.g. so400m's 4304 / 1152."""
    ratio = mlp_dim / width
    if int(width * ratio) != mlp_dim:
        ratio = (mlp_dim + 0.5) / width
    return ratio


def timm_vision_config(cfg: ModelConfig) -> dict[str, Any]:
    """config.json for timm's `local-dir:` loader: our vision tower's sizes at export resolution."""
    vision = cfg.vision
    if vision.layer_norm_eps != _TIMM_LAYER_NORM_EPS:
        raise ValueError(
            f"timm's ViT uses LayerNorm eps {_TIMM_LAYER_NORM_EPS}, this model "
            f"{vision.layer_norm_eps}: the open_clip export would not match"
        )
    # timm's ViT default is exact GELU (torch's nn.GELU; its "gelu" name builds timm's own class).
    activation = {} if vision.activation == "gelu" else {"act_layer": vision.activation}
    return {
        "architecture": _TIMM_ARCHITECTURE,
        "model_args": {
            "img_size": vision.image_size,
            "patch_size": vision.patch_size,
            "in_chans": vision.channels,
            "embed_dim": vision.width,
            "depth": vision.depth,
            "num_heads": vision.heads,
            "mlp_ratio": _mlp_ratio(vision.width, vision.mlp_dim),
            **activation,
            "class_token": False,
            "global_pool": "map",
        },
        "pretrained_cfg": {
            "input_size": [vision.channels, vision.image_size, vision.image_size],
            "mean": PREPROCESS["mean"],
            "std": PREPROCESS["std"],
            "interpolation": PREPROCESS["interpolation"],
            "num_classes": 0,
        },
    }


def registered_timm_architecture(cfg: ModelConfig) -> str | None:
    """The timm-registered architecture that builds exactly our vision trunk, if one does (its
    name gives the patch size and resolution; modules, sizes and pooling are compared on the meta
    device, so nothing is allocated)."""
    import timm

    vision = cfg.vision
    candidates = timm.list_models(f"vit_*_patch{vision.patch_size}_siglip_{vision.image_size}")
    if not candidates:
        return None
    with torch.device("meta"):
        ours = timm.create_model(
            _TIMM_ARCHITECTURE, num_classes=0, **timm_vision_config(cfg)["model_args"]
        )
        for name in candidates:
            if _same_trunk(ours, timm.create_model(name, num_classes=0)):
                return name
    return None


def _same_trunk(ours: torch.nn.Module, theirs: torch.nn.Module) -> bool:
    def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
        return {key: tuple(value.shape) for key, value in module.state_dict().items()}

    settings = ("global_pool", "num_prefix_tokens", "no_embed_class", "dynamic_img_size")
    return (
        repr(ours) == repr(theirs)
        and shapes(ours) == shapes(theirs)
        and all(getattr(ours, name, None) == getattr(theirs, name, None) for name in settings)
    )


def open_clip_config(cfg: ModelConfig, trunk: str) -> dict[str, Any]:
    """{"model_cfg", "preprocess_cfg"} for a CustomTextCLIP equal to our towers, whose vision
    trunk is the timm model `trunk` (a registered name or `local-dir:FOLDER`); the tokenizer
    files sit beside the config."""
    text = cfg.text
    model_cfg = {
        "embed_dim": cfg.embed_dim,
        "custom_text": True,
        "init_logit_bias": cfg.init_logit_bias,
        "vision_cfg": {
            "image_size": cfg.vision.image_size,
            "timm_model_name": trunk,
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": {
            "context_length": text.context_length,
            "vocab_size": text.vocab_size,
            # In a `local-dir:` model open_clip reads the tokenizer from that folder; for loaders
            # that take the config alone (the curation scorer) the path is relative to the
            # config's folder. Cleaning: training.tokenizer's.
            "hf_tokenizer_name": ".",
            "tokenizer_kwargs": {"clean": "lower"},
            "width": text.width,
            "heads": text.heads,
            "layers": text.depth,
            "mlp_ratio": _mlp_ratio(text.width, text.mlp_dim),
            "no_causal_mask": True,
            "pool_type": "last",
            "proj_bias": True,
            "act_kwargs": {"approximate": "tanh"},
            "norm_kwargs": {"eps": text.layer_norm_eps},
        },
    }
    return {"model_cfg": model_cfg, "preprocess_cfg": {**PREPROCESS, "size": cfg.vision.image_size}}


def _fused(state: Mapping[str, Tensor], prefix: str, parts: tuple[str, ...], suffix: str) -> Tensor:
    return torch.cat([state[f"{prefix}{part}_proj.{suffix}"] for part in parts])


def state_dict_to_open_clip(state: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Our state dict → open_clip CustomTextCLIP keys (timm trunk + open_clip text tower).
    The LocCa decoder, distillation heads and mask token are training-only and left out."""
    vision, width = cfg.vision, cfg.vision.width
    grid = vision.image_size // vision.patch_size
    out: dict[str, Tensor] = {}
    trunk = "visual.trunk."
    out[trunk + "pos_embed"] = resize_position_grid(
        state["vision.position_embedding"], grid, grid
    ).reshape(1, grid * grid, width)
    patch = vision.patch_size
    # Our patches are flattened (row, col, channel); a conv kernel is (channel, row, col).
    out[trunk + "patch_embed.proj.weight"] = (
        state["vision.patch_embedding.weight"]
        .reshape(width, patch, patch, vision.channels)
        .permute(0, 3, 1, 2)
    )
    out[trunk + "patch_embed.proj.bias"] = state["vision.patch_embedding.bias"]
    for index in range(vision.depth):
        ours, theirs = f"vision.layers.{index}.", f"{trunk}blocks.{index}."
        for suffix in ("weight", "bias"):
            out[f"{theirs}norm1.{suffix}"] = state[f"{ours}layer_norm1.{suffix}"]
            out[f"{theirs}norm2.{suffix}"] = state[f"{ours}layer_norm2.{suffix}"]
            out[f"{theirs}attn.qkv.{suffix}"] = _fused(
                state, f"{ours}self_attn.", ("q", "k", "v"), suffix
            )
            out[f"{theirs}attn.proj.{suffix}"] = state[f"{ours}self_attn.out_proj.{suffix}"]
            for fc in ("fc1", "fc2"):
                out[f"{theirs}mlp.{fc}.{suffix}"] = state[f"{ours}mlp.{fc}.{suffix}"]
    pool, head = trunk + "attn_pool.", "vision.head."
    out[pool + "latent"] = state[head + "probe"]
    for suffix in ("weight", "bias"):
        out[f"{trunk}norm.{suffix}"] = state[f"vision.post_layernorm.{suffix}"]
        out[f"{pool}q.{suffix}"] = state[f"{head}attention.q_proj.{suffix}"]
        out[f"{pool}kv.{suffix}"] = _fused(state, f"{head}attention.", ("k", "v"), suffix)
        out[f"{pool}proj.{suffix}"] = state[f"{head}attention.out_proj.{suffix}"]
        out[f"{pool}norm.{suffix}"] = state[f"{head}layernorm.{suffix}"]
        for fc in ("fc1", "fc2"):
            out[f"{pool}mlp.{fc}.{suffix}"] = state[f"{head}mlp.{fc}.{suffix}"]

    out["text.token_embedding.weight"] = state["text.token_embedding.weight"]
    out["text.positional_embedding"] = state["text.position_embedding"]
    for index in range(cfg.text.depth):
        ours, theirs = f"text.layers.{index}.", f"text.transformer.resblocks.{index}."
        for suffix in ("weight", "bias"):
            out[f"{theirs}ln_1.{suffix}"] = state[f"{ours}layer_norm1.{suffix}"]
            out[f"{theirs}ln_2.{suffix}"] = state[f"{ours}layer_norm2.{suffix}"]
            out[f"{theirs}attn.in_proj_{suffix}"] = _fused(
                state, f"{ours}self_attn.", ("q", "k", "v"), suffix
            )
            out[f"{theirs}attn.out_proj.{suffix}"] = state[f"{ours}self_attn.out_proj.{suffix}"]
            out[f"{theirs}mlp.c_fc.{suffix}"] = state[f"{ours}mlp.fc1.{suffix}"]
            out[f"{theirs}mlp.c_proj.{suffix}"] = state[f"{ours}mlp.fc2.{suffix}"]
    for suffix in ("weight", "bias"):
        out[f"text.ln_final.{suffix}"] = state[f"text.final_layer_norm.{suffix}"]
        out[f"text.text_projection.{suffix}"] = state[f"text.head.{suffix}"]
    out["logit_scale"] = state["logit_scale"].reshape(())
    out["logit_bias"] = state["logit_bias"].reshape(())
    return {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in out.items()}


@dataclass(frozen=True)
class OpenClipExport:
    folder: Path
    weights: Path
    config: Path

    def scorer_arguments(self) -> list[str]:
        """The `python -m curation score` arguments that load this export."""
        return [
            "--model",
            MODEL_NAME,
            "--weights",
            str(self.weights),
            "--model-config",
            str(self.config),
        ]

    def open_clip_name(self) -> str:
        """The name `open_clip.create_model_and_transforms` / `get_tokenizer` take."""
        return f"local-dir:{self.folder}"


def export_open_clip(
    state: Mapping[str, Tensor], cfg: ModelConfig, out: Path, tokenizer: Tokenizer | None = None
) -> OpenClipExport:
    """Write the open_clip folder for a model's state dict and config; see the module doc."""
    require_siglip_layout(cfg)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    trunk = registered_timm_architecture(cfg)
    if trunk is None:
        timm_folder = out / TIMM_FOLDER
        timm_folder.mkdir(exist_ok=True)
        (timm_folder / "config.json").write_text(json.dumps(timm_vision_config(cfg), indent=1))
        trunk = f"local-dir:{timm_folder}"
    config = open_clip_config(cfg, trunk)
    config_path = out / CONFIG_NAME
    config_path.write_text(json.dumps(config, indent=1))
    weights_path = out / WEIGHTS_NAME
    # The metadata lets the curation scorer check the model name and rebuild without a sidecar.
    save_file(
        state_dict_to_open_clip(state, cfg),
        weights_path,
        metadata={"open_clip_model": MODEL_NAME, "open_clip_config": json.dumps(config)},
    )
    tokenizer = tokenizer or Tokenizer(context_length=cfg.text.context_length)
    save_tokenizer_files(tokenizer, out, cfg.text.context_length)
    return OpenClipExport(out, weights_path, config_path)
