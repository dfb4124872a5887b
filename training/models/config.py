"""Model configuration: nested dataclasses, named presets, JSON round trip.

A preset names a full architecture; `model_config(preset, **overrides)` changes any field with
dotted keys ("vision.depth") or per-tower dicts ("vision={'depth': 2}"), so a CPU test and a
multi-node run share one code path and differ only in numbers.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VisionConfig:
    image_size: int = 256
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    # The learned position grid is stored at this many patches per side and resized per image.
    pos_grid_size: int = 16
    channels: int = 3
    layer_norm_eps: float = 1e-6
    # The MLPs' GELU (blocks and MAP head): "gelu_tanh" (SigLIP's tanh approximation) or "gelu"
    # (exact). b16 uses the exact one, as timm's B/16 SigLIP does, so its trunk is a registered
    # timm architecture and its open_clip export holds no path (training/export/openclip.py).
    activation: str = "gelu_tanh"
    # The image embedding: "map" (SigLIP's attention-pooling head, a learned probe over the
    # final tokens) or "avg" (their mean over real patches, no head; timm's global_pool="avg").
    # The exports write SigLIP's layout, so they take "map" only.
    pool: str = "map"

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"vision.pool must be one of {POOLS}, not {self.pool!r}")

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.channels


POOLS = ("map", "avg")


@dataclass
class TextConfig:
    # The default Tokenizer's size: 49408 CLIP BPE ids + 1000 box bins + 3 LocCa task tokens.
    vocab_size: int = 50411
    context_length: int = 64
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    layer_norm_eps: float = 1e-6


@dataclass
class DecoderConfig:
    """LocCa decoder; `vocab_size` 0 means "the text tower's vocabulary"."""

    width: int = 768
    depth: int = 6
    heads: int = 12
    mlp_dim: int = 3072
    max_len: int = 64
    vocab_size: int = 0
    # Vocabulary block size for the chunked cross-entropy (bounds logits memory).
    ce_chunk_size: int = 8192
    layer_norm_eps: float = 1e-6


@dataclass
class DistillConfig:
    """Phase-2 self-distillation heads: DINO-style projection heads for SILC (pooled embedding)
    and TIPS (patch tokens), and the momentum of their teacher centers."""

    prototypes: int = 32768
    patch_prototypes: int = 8192
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    layers: int = 3
    center_momentum: float = 0.9


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # None: no phase-2 heads (a phase-1-only model; DDP then has no unused parameters).
    distill: DistillConfig | None = field(default_factory=DistillConfig)
    # Joint embedding width; the vision tower has no projection, so it must equal vision.width.
    embed_dim: int = 768
    init_logit_scale: float = 2.302585092994046  # log 10
    init_logit_bias: float = -10.0

    def __post_init__(self) -> None:
        if self.embed_dim != self.vision.width:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must equal vision.width ({self.vision.width}): "
                "SigLIP 2 has no image projection"
            )
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError(
                f"image_size {self.vision.image_size} is not a multiple of patch_size "
                f"{self.vision.patch_size}"
            )

    @property
    def decoder_vocab_size(self) -> int:
        return self.decoder.vocab_size or self.text.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        kwargs = dict(data)
        for name, sub_cls in (
            ("vision", VisionConfig),
            ("text", TextConfig),
            ("decoder", DecoderConfig),
            ("distill", DistillConfig),
        ):
            if name in kwargs and isinstance(kwargs[name], dict):
                kwargs[name] = _sub_from_dict(sub_cls, kwargs[name], name)
        return cls(**kwargs)


def _sub_from_dict(sub_cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(sub_cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {where} config keys: {sorted(unknown)}")
    return sub_cls(**data)


PRESETS: dict[str, ModelConfig] = {
    # CPU tests and demos: trains a few hundred steps in minutes on 2 cores.
    "tiny": ModelConfig(
        vision=VisionConfig(
            image_size=64, patch_size=8, width=64, depth=2, heads=4, mlp_dim=256, pos_grid_size=8
        ),
        # 64 positions, as b16 and so400m: transformers' zero-shot-image-classification pipeline
        # pads SigLIP text to 64 tokens whatever the tower has, so an export of this preset runs
        # in it as it is. The mini web's captions take at most ~33 tokens of its BPE (9 on
        # average), so the last-token pooling reads EOS padding for most of the 64.
        text=TextConfig(width=64, depth=2, heads=4, mlp_dim=256),
        # One vocabulary block: even the CLIP vocabulary's logits fit in memory at this size.
        decoder=DecoderConfig(
            width=64, depth=1, heads=4, mlp_dim=256, max_len=32, ce_chunk_size=65536
        ),
        distill=DistillConfig(
            prototypes=256, patch_prototypes=256, hidden_dim=128, bottleneck_dim=64
        ),
        embed_dim=64,
        # b starts at the log prior of a positive pair, log(1/n) for n contrastive samples per
        # batch: SigLIP's −10 is that prior for its 32k batch; the tiny runs have n = 24, and at
        # −10 they sat ~200 steps on the loss plateau while b climbed at the learning rate.
        init_logit_bias=-3.0,
    ),
    "b16": ModelConfig(
        vision=VisionConfig(
            image_size=256,
            patch_size=16,
            width=768,
            depth=12,
            heads=12,
            mlp_dim=3072,
            pos_grid_size=16,
            activation="gelu",
        ),
        text=TextConfig(width=768, depth=12, heads=12, mlp_dim=3072),
        decoder=DecoderConfig(width=768, depth=6, heads=12, mlp_dim=3072),
        embed_dim=768,
    ),
    "so400m": ModelConfig(
        vision=VisionConfig(
            image_size=256,
            patch_size=16,
            width=1152,
            depth=27,
            heads=16,
            mlp_dim=4304,
            pos_grid_size=16,
        ),
        text=TextConfig(width=1152, depth=27, heads=16, mlp_dim=4304),
        decoder=DecoderConfig(width=1152, depth=6, heads=16, mlp_dim=4304),
        embed_dim=1152,
    ),
}


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """A copy of PRESETS[preset] with overrides: `vision={"depth": 2}`, `embed_dim=64`, or a flat
    dict of dotted keys passed as `**{"vision.depth": 2}`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose from {sorted(PRESETS)}")
    data = copy.deepcopy(PRESETS[preset].to_dict())
    for key, value in overrides.items():
        parts = key.split(".")
        target = data
        for part in parts[:-1]:
            if part not in target or not isinstance(target[part], dict):
                raise ValueError(f"override {key!r}: {part!r} is not a config section")
            target = target[part]
        leaf = parts[-1]
        if leaf not in target:
            raise ValueError(f"override {key!r}: unknown field {leaf!r}")
        if isinstance(target[leaf], dict) and isinstance(value, dict):
            target[leaf].update(value)
        else:
            target[leaf] = value
    return ModelConfig.from_dict(data)
