"""Hugging Face transformers folders: export our towers as a `Siglip2Model`, import released
SigLIP 2 weights as a checkpoint of ours. Everything reads and writes local folders only.

Export writes what `transformers` loads offline:

    OUT/config.json, OUT/model.safetensors        Siglip2Model (AutoModel)
    OUT/tokenizer.json, tokenizer_config.json     our tokenizer (input_ids only; AutoTokenizer)
    OUT/tokenization_openvision.py                its class, for trust_remote_code=True
    OUT/preprocessor_config.json                  Siglip2ImageProcessor (AutoImageProcessor)

AutoTokenizer, AutoProcessor and pipeline("zero-shot-image-classification") load the folder as
it is. For model_type "siglip2" transformers 5 builds its Gemma-style `Siglip2Tokenizer` around
the vocabulary in tokenizer.json, which cannot express our BPE, unless tokenizer_config.json
names a tokenizer class through `auto_map`: then it loads tokenizer.json as it is, and with
trust_remote_code=True the shipped class (see tokenization_openvision.py). Siglip2Processor
overrides the image processor's patch size and count and the text length with its own defaults
(16, 256, 64) unless the tokenizer's init arguments carry them, so tokenizer_config.json does.
The zero-shot pipeline pads text to 64 tokens for every SigLIP model, which every preset's text
tower has; one built with fewer positions (text.context_length overridden) needs
trust_remote_code=True, whose class caps the padding.

Siglip2 is the transformers architecture that matches ours (linear patch embedding on flattened
patches, a learned position grid resized bilinearly with antialias per image, MAP head,
last-token text pooling); the weight mapping itself is training/models/hf_siglip2.py. Two
usage notes hold for exported models exactly as for released SigLIP 2 ones: texts must be
padded to the full context length (padding="max_length", truncation=True), and the text
tower attends to the padding, so no attention mask is passed (the tokenizer does not return
one). HF's image processor (`image_processor`) keeps the aspect ratio (NaFlex) within the
square input's patch count: `training eval` scores zero-shot with that same processor for
checkpoints trained on NaFlex batches (phase 3), so the pipeline reproduces their top-1; for
square-only checkpoints it squashes to a square, which `pixel_inputs` feeds to the HF model.

Import builds our model from a local Siglip2 folder; the LocCa decoder (absent from SigLIP 2)
is freshly initialised, so imported checkpoints serve zero-shot/retrieval/dense/k-NN evaluation
and initialisation, not ARef grounding. The folder's tokenizer.json (Gemma's, for released
SigLIP 2) is copied beside the weights and named in config.json, and `python -m training eval`
tokenizes with it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from training.checkpoint import CONFIG_FILE, LATEST, MODEL_FILE, TRAINER_FILE, step_dir_name
from training.export import require_siglip_layout
from training.export.tokenizer_files import save_tokenizer_files
from training.models.config import ModelConfig
from training.models.hf_siglip2 import (
    hf_config_kwargs,
    model_config_from_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)
from training.models.siglip import SigLIP2
from training.run_folder import TOKENIZER_FILE_KEY
from training.tokenizer import Tokenizer

# Parameters of ours that SigLIP 2 lacks; an import leaves them at their initial values.
_LOCAL_ONLY_PREFIXES = ("decoder.", "distill_heads.", "vision.mask_token")


TOKENIZER_MODULE = Path(__file__).with_name("tokenization_openvision.py")


def _hf_config(cfg: ModelConfig, tokenizer: Tokenizer):
    import transformers

    kwargs = hf_config_kwargs(cfg)
    # Our texts are EOS-padded, with no start token: no id outside the vocabulary.
    special = {
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.eos_id,
    }
    kwargs["text_config"].update(special)
    return transformers.Siglip2Config(**kwargs, **special)


def _ship_tokenizer_class(out: Path, cfg: ModelConfig) -> None:
    """The tokenizer class and the processor arguments transformers' Auto classes need."""
    shutil.copy(TOKENIZER_MODULE, out / TOKENIZER_MODULE.name)
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    grid = cfg.vision.image_size // cfg.vision.patch_size
    config.update(
        tokenizer_class="TokenizersBackend",
        auto_map={"AutoTokenizer": [None, f"{TOKENIZER_MODULE.stem}.OpenVisionTokenizer"]},
        # Init arguments the processor prefers to its class defaults.
        max_length=cfg.text.context_length,
        patch_size=cfg.vision.patch_size,
        max_num_patches=grid * grid,
    )
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def export_hf(
    state: Mapping[str, Tensor], cfg: ModelConfig, out: Path, tokenizer: Tokenizer | None = None
) -> Path:
    """Write a transformers Siglip2 folder for our weights; returns the folder."""
    import transformers

    require_siglip_layout(cfg)
    tokenizer = tokenizer or Tokenizer(context_length=cfg.text.context_length)
    hf_model = transformers.Siglip2Model(_hf_config(cfg, tokenizer))
    # Strict: every HF parameter must come from ours, so nothing is silently left at init.
    hf_model.load_state_dict(state_dict_to_hf(state), strict=True)
    out.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out))
    save_tokenizer_files(tokenizer, out, cfg.text.context_length)
    _ship_tokenizer_class(out, cfg)
    image_processor(cfg).save_pretrained(str(out))
    return out


def image_processor(cfg: ModelConfig):
    """The Siglip2ImageProcessor an export ships (what AutoProcessor and the zero-shot pipeline
    load): aspect ratio kept, at most the square input's patch count, [-1, 1]. `training eval`
    preprocesses with it too for models trained on NaFlex batches."""
    import transformers

    grid = cfg.vision.image_size // cfg.vision.patch_size
    return transformers.Siglip2ImageProcessor(
        patch_size=cfg.vision.patch_size,
        max_num_patches=grid * grid,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=2,  # PIL bilinear
    )


def naflex_inputs(processed: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The Siglip2 vision inputs (pixel_values, pixel_attention_mask, spatial_shapes) → our
    NaFlex keys (patches, patch_coords, patch_mask): the inverse of `pixel_inputs`. Both lay
    patches out row by row, each flattened (row, col, channel)."""
    from training.models.vision import grid_coords

    mask = processed["pixel_attention_mask"].bool()
    coords = torch.zeros(*mask.shape, 2, dtype=torch.long)
    for index, (rows, cols) in enumerate(processed["spatial_shapes"].tolist()):
        coords[index, : rows * cols] = grid_coords(rows, cols)
    return {"patches": processed["pixel_values"], "patch_coords": coords, "patch_mask": mask}


def load_hf_siglip2(folder: Path):
    """A transformers Siglip2Model from a local folder (never the hub), in eval mode."""
    import transformers

    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a local HF model folder)")
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if config.model_type != "siglip2":
        raise ValueError(f"{folder}: model_type {config.model_type!r}, expected 'siglip2'")
    return transformers.Siglip2Model.from_pretrained(str(folder), local_files_only=True).eval()


def import_hf_siglip2(folder: Path, run: Path, decoder_depth: int = 1) -> Path:
    """Convert a local Siglip2 folder into RUN/checkpoints/step_00000000 (weights + config, and
    `latest` pointing at it), readable by `python -m training eval` and export."""
    hf_model = load_hf_siglip2(folder)
    cfg = dataclasses.replace(
        model_config_from_hf(hf_model.config, decoder_depth=decoder_depth), distill=None
    )
    model = SigLIP2(cfg)
    result = model.load_state_dict(state_dict_from_hf(hf_model.state_dict()), strict=False)
    stray = [key for key in result.missing_keys if not key.startswith(_LOCAL_ONLY_PREFIXES)]
    if stray or result.unexpected_keys:
        raise KeyError(
            f"{folder}: weights do not fit; missing {stray[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    checkpoints = run / "checkpoints"
    step_folder = checkpoints / step_dir_name(0)
    step_folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        step_folder / MODEL_FILE,
    )
    config = {"model": cfg.to_dict(), "imported_from": str(folder.resolve())}
    if (folder / "tokenizer.json").is_file():
        # Released SigLIP 2 text towers read Gemma ids: evaluation must use their tokenizer.
        shutil.copy(folder / "tokenizer.json", step_folder / "tokenizer.json")
        config[TOKENIZER_FILE_KEY] = "tokenizer.json"
    (step_folder / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    (step_folder / TRAINER_FILE).write_text(json.dumps({"step": 0}))
    (checkpoints / LATEST).write_text(step_folder.name)
    return step_folder


def pixel_inputs(images: Tensor, patch_size: int) -> dict[str, Tensor]:
    """Square images [B, C, H, W] in [-1, 1] → the Siglip2 vision inputs (patches, mask, grid)."""
    from training.models.vision import patchify

    patches, _ = patchify(images, patch_size)
    rows, cols = images.shape[-2] // patch_size, images.shape[-1] // patch_size
    batch = images.shape[0]
    return {
        "pixel_values": patches,
        "pixel_attention_mask": torch.ones(batch, rows * cols, dtype=torch.long),
        "spatial_shapes": torch.tensor([[rows, cols]] * batch),
    }
