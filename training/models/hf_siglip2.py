"""Weight and config conversion between SigLIP2 and Hugging Face transformers' `Siglip2Model`.

The towers share HF's architecture (linear patch embedding on (row, col, channel) patches, a
position grid resized bilinearly with antialias, MAP head, last-token text pooling), so
conversion is renaming plus three reshapes: the position grid ([G, G, D] ↔ [G², D]), the MAP
head's fused `in_proj` (↔ separate q/k/v) and t, b (scalars ↔ [1]). Released SigLIP 2 weights
load for parity checks, and trained towers export to HF. The LocCa decoder, the distillation
heads and the TIPS mask token exist only here; they are left out of exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from training.models.config import DecoderConfig, ModelConfig, TextConfig, VisionConfig

# (our prefix, HF prefix), applied to whole key prefixes.
_RENAMES: tuple[tuple[str, str], ...] = (
    ("vision.patch_embedding.", "vision_model.embeddings.patch_embedding."),
    ("vision.layers.", "vision_model.encoder.layers."),
    ("vision.post_layernorm.", "vision_model.post_layernorm."),
    ("vision.head.probe", "vision_model.head.probe"),
    ("vision.head.attention.out_proj.", "vision_model.head.attention.out_proj."),
    ("vision.head.layernorm.", "vision_model.head.layernorm."),
    ("vision.head.mlp.", "vision_model.head.mlp."),
    ("text.token_embedding.", "text_model.embeddings.token_embedding."),
    ("text.position_embedding", "text_model.embeddings.position_embedding.weight"),
    ("text.layers.", "text_model.encoder.layers."),
    ("text.final_layer_norm.", "text_model.final_layer_norm."),
    ("text.head.", "text_model.head."),
)
_POSITION_GRID = ("vision.position_embedding", "vision_model.embeddings.position_embedding.weight")
_MAP_QKV = tuple(f"vision.head.attention.{name}_proj." for name in ("q", "k", "v"))
_MAP_IN_PROJ = "vision_model.head.attention.in_proj_"
_SCALARS = ("logit_scale", "logit_bias")
# Parameters that HF's Siglip2Model does not have.
_LOCAL_ONLY = ("decoder.", "distill_heads.", "vision.mask_token")


def _rename(key: str, forward: bool) -> str | None:
    for ours, theirs in _RENAMES:
        source, target = (ours, theirs) if forward else (theirs, ours)
        if key.startswith(source):
            return target + key[len(source) :]
    return None


def state_dict_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict → HF Siglip2Model keys and shapes (decoder, distillation heads and mask
    token dropped)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_LOCAL_ONLY) or key.startswith(_MAP_QKV):
            continue
        if key == _POSITION_GRID[0]:
            out[_POSITION_GRID[1]] = value.reshape(-1, value.shape[-1])
        elif key in _SCALARS:
            out[key] = value.reshape(1)
        elif (renamed := _rename(key, forward=True)) is not None:
            out[renamed] = value
        else:
            raise KeyError(f"no HF name for parameter {key!r}")
    for suffix in ("weight", "bias"):
        out[_MAP_IN_PROJ + suffix] = torch.cat([state[prefix + suffix] for prefix in _MAP_QKV])
    return out


def state_dict_from_hf(hf_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """HF Siglip2Model state dict → our keys and shapes (towers, t and b only)."""
    out: dict[str, Tensor] = {}
    for key, value in hf_state.items():
        if key == _POSITION_GRID[1]:
            side = round(value.shape[0] ** 0.5)
            if side * side != value.shape[0]:
                raise ValueError(
                    f"HF position embedding of {value.shape[0]} patches is not a square grid"
                )
            out[_POSITION_GRID[0]] = value.reshape(side, side, value.shape[-1])
        elif key in _SCALARS:
            out[key] = value.reshape(())
        elif key.startswith(_MAP_IN_PROJ):
            suffix = key[len(_MAP_IN_PROJ) :]
            for prefix, part in zip(_MAP_QKV, value.chunk(3), strict=True):
                out[prefix + suffix] = part
        elif (renamed := _rename(key, forward=False)) is not None:
            out[renamed] = value
        else:
            raise KeyError(f"unexpected HF Siglip2Model parameter {key!r}")
    return out


# Our VisionConfig.activation -> transformers' `hidden_act` (ACT2FN names), and back.
_HF_ACTIVATIONS = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}
_FROM_HF_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu"}


def _activation_from_hf(hidden_act: str, tower: str) -> str:
    if hidden_act not in _FROM_HF_ACTIVATIONS:
        raise ValueError(
            f"{tower}_config.hidden_act {hidden_act!r} is not supported; expected one of "
            f"{sorted(_FROM_HF_ACTIVATIONS)}"
        )
    return _FROM_HF_ACTIVATIONS[hidden_act]


def model_config_from_hf(hf_config: Any, decoder_depth: int = 6) -> ModelConfig:
    """ModelConfig for an HF `Siglip2Config`; the LocCa decoder (absent from HF) gets the vision
    width and `decoder_depth` layers."""
    vision, text = hf_config.vision_config, hf_config.text_config
    if text.projection_size != vision.hidden_size:
        raise ValueError(
            f"text projection size {text.projection_size} != vision width {vision.hidden_size}: "
            "SigLIP 2 has no image projection"
        )
    if _activation_from_hf(text.hidden_act, "text") != "gelu_tanh":
        raise ValueError(
            f"text_config.hidden_act {text.hidden_act!r}: our text tower uses GELU's tanh "
            "approximation (gelu_pytorch_tanh) only"
        )
    grid = round(vision.num_patches**0.5)
    return ModelConfig(
        vision=VisionConfig(
            image_size=grid * vision.patch_size,
            patch_size=vision.patch_size,
            width=vision.hidden_size,
            depth=vision.num_hidden_layers,
            heads=vision.num_attention_heads,
            mlp_dim=vision.intermediate_size,
            pos_grid_size=grid,
            channels=vision.num_channels,
            layer_norm_eps=vision.layer_norm_eps,
            activation=_activation_from_hf(vision.hidden_act, "vision"),
        ),
        text=TextConfig(
            vocab_size=text.vocab_size,
            context_length=text.max_position_embeddings,
            width=text.hidden_size,
            depth=text.num_hidden_layers,
            heads=text.num_attention_heads,
            mlp_dim=text.intermediate_size,
            layer_norm_eps=text.layer_norm_eps,
        ),
        decoder=DecoderConfig(
            width=vision.hidden_size,
            depth=decoder_depth,
            heads=vision.num_attention_heads,
            mlp_dim=vision.intermediate_size,
        ),
        embed_dim=vision.hidden_size,
    )


def hf_config_kwargs(cfg: ModelConfig) -> dict[str, dict[str, Any]]:
    """Keyword arguments for `transformers.Siglip2Config(**kwargs)` describing our towers."""
    vision, text = cfg.vision, cfg.text
    return {
        "vision_config": {
            "hidden_size": vision.width,
            "intermediate_size": vision.mlp_dim,
            "num_hidden_layers": vision.depth,
            "num_attention_heads": vision.heads,
            "num_channels": vision.channels,
            "patch_size": vision.patch_size,
            "num_patches": vision.pos_grid_size**2,
            "layer_norm_eps": vision.layer_norm_eps,
            "hidden_act": _HF_ACTIVATIONS[vision.activation],
        },
        "text_config": {
            "vocab_size": text.vocab_size,
            "max_position_embeddings": text.context_length,
            "hidden_size": text.width,
            "intermediate_size": text.mlp_dim,
            "num_hidden_layers": text.depth,
            "num_attention_heads": text.heads,
            "projection_size": cfg.embed_dim,
            "layer_norm_eps": text.layer_norm_eps,
            "hidden_act": "gelu_pytorch_tanh",
        },
    }
