"""The scoring model behind one interface, in-process or as a Ray actor (one GPU per actor).

`ClipEmbedder` loads the scorer once and turns preprocessed pixel batches plus captions into
L2-normalised image and text embeddings; the cosine score is their row-wise dot product. As a Ray
actor (`start_embedder_actors`) the model stays loaded across every shard it serves, and the
shard tasks that decode JPEGs on other CPUs keep it fed.

Cross-fitting: given one spec per fold (the same architecture, weights trained without that
fold's rows), or several per fold (an ensemble: models i, i + folds, ... for fold i), the
embedder holds every model and `embed(..., model=i)` runs model i. A
scorer trained for many epochs on the pool it scores has learnt its wrong pairs as well as its
right ones; scoring each row with a model that never saw it removes that bias (the demo's round
1, trained ~20 epochs on round 0's pairs: see curation/demo.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from curation.score.model import (
    ScorerConfigError,
    ScorerSpec,
    config_image_size,
    load_scorer,
    scorer_config,
    skip_unused_backends,
)


class ClipEmbedder:
    def __init__(
        self,
        spec: ScorerSpec | tuple[ScorerSpec, ...],
        threads: int | None = None,
        own_process: bool = False,
    ) -> None:
        """`own_process`: this process will load no other model (a Ray actor's), so open_clip's
        optional backends that the specs do not use are never imported (`skip_unused_backends`)."""
        specs = spec if isinstance(spec, tuple) else (spec,)
        if own_process:
            skip_unused_backends(specs)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorers = [load_scorer(one, device=self.device) for one in specs]
        self.scorer = self.scorers[0]
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        cfg = self.preprocess_cfg()
        for one, scorer in zip(specs[1:], self.scorers[1:]):
            if preprocess_cfg_of(scorer.config) != cfg:
                raise ScorerConfigError(
                    f"cross-fit scorers must preprocess alike: {one.weights} does not match "
                    f"{specs[0].weights}"
                )
        self._mean, self._std = cfg["mean"], cfg["std"]  # for uint8 batches (model_input)

    def describe(self) -> dict[str, Any]:
        """What shard tasks need to preprocess for this model, and what it is."""
        return {
            "preprocess_cfg": self.preprocess_cfg(),
            "random_init": any(scorer.random_init for scorer in self.scorers),
            "device": self.device,
            "image_size": self.scorer.image_size,
            "embed_dim": int(self.scorer.config["model_cfg"]["embed_dim"]),
        }

    def preprocess_cfg(self) -> dict[str, Any]:
        return preprocess_cfg_of(self.scorer.config)

    def model_input(self, pixels: np.ndarray):
        """The model's input tensor on its device from a batch of preprocessed pixels: float
        [n, 3, H, W] as the eval transform gives them, or uint8 [n, H, W, 3] after only its
        geometric part (`build_image_geometry`), which is normalised here, on the whole batch."""
        import torch

        images = _as_tensor(pixels).to(self.device)
        if images.dtype != torch.uint8:
            return images
        return normalise_batch(images, self._mean, self._std)

    def embed(
        self, pixels: np.ndarray, texts: list[str], model: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image embeddings, text embeddings), float32, unit norm, [n, d] each; `pixels` as
        `model_input` takes them; `model`: which one (cross-fitting), else the one."""
        import torch

        scorer = self.scorers[model]
        with torch.inference_mode(), torch.autocast(self.device, enabled=self.device == "cuda"):
            images = self.model_input(pixels)
            tokens = scorer.tokenizer(texts).to(self.device)
            image_features = scorer.model.encode_image(images, normalize=True)
            text_features = encode_text(scorer.model, tokens)
        return (image_features.float().cpu().numpy(), text_features.float().cpu().numpy())

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast(self.device, enabled=self.device == "cuda"):
            features = self.scorer.model.encode_image(self.model_input(pixels), normalize=True)
        return features.float().cpu().numpy()


def pooled_positions(model: Any, tokens: Any) -> int | None:
    """How many leading positions of `tokens` decide `model`'s text embedding, when fewer than
    all of them do; else None.

    In open_clip's CLIP text tower (causal mask, the embedding read at the end-of-text token:
    pool type "argmax" or "eos"), position i attends only to positions <= i and layer norms and
    MLPs act per position, so everything after the last row's pooled token is padding that
    cannot reach any pooled output. Captions are short (the mini web's alt texts: ~10-20 tokens)
    and the tower pads them to 77, so most of its work is on padding. Bidirectional towers
    (SigLIP's, ours, `no_causal_mask`) and "last"/"first" pooling read every position: None."""
    import open_clip

    if type(model) is not open_clip.CLIP or getattr(model, "attn_mask", None) is None:
        return None
    pool_type = model.text_pool_type
    if pool_type == "argmax":
        pooled = tokens.argmax(dim=-1)
    elif pool_type == "eos" and model.text_eos_id is not None:
        pooled = (tokens == model.text_eos_id).int().argmax(dim=-1)
    else:
        return None
    length = int(pooled.max()) + 1
    return length if length < tokens.shape[1] else None


def encode_text(model: Any, tokens: Any) -> Any:
    """`model.encode_text(tokens, normalize=True)`, run on only the positions that can reach a
    pooled output (`pooled_positions`): the same values up to float rounding (the attention's
    softmax sums over fewer masked zeros; tested), at a fraction of the text tower's cost.
    Any other model: its own `encode_text`."""
    import torch.nn.functional as F
    from open_clip.transformer import text_global_pool
    from torch import nn

    length = pooled_positions(model, tokens)
    if length is None:
        return model.encode_text(tokens, normalize=True)
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), tokens, model.text_pool_type, model.text_eos_id)
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return F.normalize(x, dim=-1)


def preprocess_cfg_of(config: dict[str, Any]) -> dict[str, Any]:
    """open_clip's eval preprocessing for a scorer config ({"model_cfg", "preprocess_cfg"}):
    its defaults, the config's own fields, and the model's input side as the size."""
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    merged = merge_preprocess_dict(asdict(PreprocessCfg()), config.get("preprocess_cfg", {}))
    merged["size"] = config_image_size(config)
    return merged


def shard_inputs(
    spec: ScorerSpec, metadata: dict[str, Any] | None = None
) -> tuple[dict[str, Any], int]:
    """(preprocess config, embedding width): what the shard tasks that decode for `spec`'s
    actors need, from the config alone, so they can start while the actors build the model.
    `metadata`: the weights' metadata when the caller has read it already."""
    config = scorer_config(spec, metadata)
    return preprocess_cfg_of(config), int(config["model_cfg"]["embed_dim"])


def _as_tensor(pixels: np.ndarray):
    import torch

    # Arrays arriving through Ray's object store are read-only; torch wants writable memory.
    return torch.from_numpy(np.require(pixels, requirements="W"))


def build_transform(preprocess_cfg: dict[str, Any]) -> Any:
    """The model's eval transform (PIL image -> float tensor) from its preprocess config."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)


# open_clip's eval interpolations -> the Pillow filter torchvision resizes a PIL image with.
PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class ShortestSideCrop:
    """open_clip's eval geometry for a square input in its default resize mode, "shortest"
    (torchvision's Resize(size) then CenterCrop(size), then the colour mode), in Pillow alone:
    the shorter side to `size` and the longer one to int(size * long / short), both skipped when
    the picture already has that size; then the centred size x size box, rounded as torchvision
    rounds it. A process that only decodes then never imports torch, torchvision or open_clip
    (~6 s and ~700 MB of RSS a process). Tests pin it to open_clip's transform, pixel for pixel."""

    size: int
    resample: int
    mode: str = "RGB"

    def __call__(self, image: Any) -> Any:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_width, new_height) != (width, height):
            image = image.resize((new_width, new_height), self.resample)
        top = int(round((new_height - self.size) / 2.0))
        left = int(round((new_width - self.size) / 2.0))
        image = image.crop((left, top, left + self.size, top + self.size))
        return image if image.mode == self.mode else image.convert(self.mode)


def build_image_geometry(preprocess_cfg: dict[str, Any]) -> Any:
    """The eval transform's steps before its conversion to a float tensor (resize, crop, RGB):
    PIL image -> PIL image, which `np.asarray` makes uint8 [H, W, 3]. `normalise_batch` does the
    rest on a stacked batch, with the same float32 operations in the same order as the
    per-image transform, so the values are the same; the batch crosses to the model as uint8
    (a quarter of float32's bytes) and is normalised in one vectorised pass, not per image.
    The default case (square input, resize mode "shortest") is `ShortestSideCrop`, without
    torch; any other takes the transform's own steps."""
    size = preprocess_cfg.get("size")
    if (
        isinstance(size, int)
        and preprocess_cfg.get("resize_mode") == "shortest"
        and preprocess_cfg.get("interpolation") in PIL_FILTERS
    ):
        filter_name = preprocess_cfg["interpolation"]
        return ShortestSideCrop(size, PIL_FILTERS[filter_name], preprocess_cfg.get("mode", "RGB"))
    from torchvision.transforms import Compose

    steps = list(build_transform(preprocess_cfg).transforms)
    names = [type(step).__name__ for step in steps]
    tensor_at = next((i for i, name in enumerate(names) if "ToTensor" in name), None)
    if tensor_at is None or names[tensor_at + 1 :] != ["Normalize"]:
        raise ValueError(f"eval transform {names} does not end in a tensor conversion + Normalize")
    return Compose(steps[:tensor_at])


def normalise_batch(pixels, mean: Any, std: Any):
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W]: /255, then (x - mean) / std per channel (what
    torchvision's ToTensor and Normalize do to each image)."""
    import torch

    images = pixels.permute(0, 3, 1, 2).to(torch.float32).div(255)
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return images.sub_(mean).div_(std)


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    cpus_per_actor: int
    gpus_per_actor: int
    decode_cpus: int  # CPUs left for the shard tasks that read and decode
    threads_per_actor: int = 1  # torch threads of one actor's model

    def describe(self) -> str:
        device = (
            f"{self.gpus_per_actor} GPU + {self.cpus_per_actor} CPU"
            if self.gpus_per_actor
            else f"{self.cpus_per_actor} CPU, {self.threads_per_actor} torch threads"
        )
        return f"{self.actors} scoring actor(s) × {device}, {self.decode_cpus} CPU(s) decoding"


def plan_actor_pool(
    cluster_cpus: float, cluster_gpus: float, requested: int | None = None
) -> ActorPlan:
    """One actor per GPU when there are GPUs; on CPUs, half the CPUs score and half decode.

    Actors hold their CPUs for the whole run, so the pool is always sized to leave at least one
    CPU for decoding: a pool that takes every CPU starves the tasks that feed it (a deadlock on a
    2-core machine). On CPUs the model still runs with the threads of every core (the actors
    share them): a decoding task keeps a core only ~10% busy (a DCT-downscaled JPEG decode and
    resize take ~3.5 ms, ViT-S-32's forward ~40 ms of CPU an image), so a model held to its
    reserved CPUs would leave the decoders' cores nearly idle.
    """
    cpus, gpus = int(cluster_cpus), int(cluster_gpus)
    if cpus < 2:
        raise ValueError(
            f"scoring needs at least 2 CPUs (one to decode, one to score); the cluster has {cpus}"
        )
    if gpus:
        actors = min(requested or gpus, gpus)
        return ActorPlan(actors, 1, 1, max(1, cpus - actors))
    cpus_per_actor = 1 if cpus <= 4 else min(4, cpus // 4)
    default = max(1, (cpus // 2) // cpus_per_actor)
    actors = requested or default
    if actors * cpus_per_actor > cpus - 1:
        actors = max(1, (cpus - 1) // cpus_per_actor)
    threads = max(cpus_per_actor, cpus // actors)
    return ActorPlan(actors, cpus_per_actor, 0, cpus - actors * cpus_per_actor, threads)


def start_embedder_actors(spec: ScorerSpec | tuple[ScorerSpec, ...], plan: ActorPlan) -> list[Any]:
    import ray

    actor_class = ray.remote(ClipEmbedder).options(
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor,
        max_restarts=2,
        max_task_retries=2,
    )
    return [
        actor_class.remote(spec, threads=plan.threads_per_actor, own_process=True)
        for _ in range(plan.actors)
    ]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit vectors (a plain dot product)."""
    return np.einsum("ij,ij->i", a, b).astype(np.float32)
