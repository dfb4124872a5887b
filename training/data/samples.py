"""Turn raw WebDataset samples into model-ready samples.

Two kinds of shards feed phase 1. Image-text shards (`KEY.jpg`, `KEY.txt`, optional `KEY.json`)
give a caption for the contrastive and captioning losses, plus boxes if the JSON carries `refs`.
Grounding shards (`KEY.jpg`, `KEY.json` with `{"source", "refs": [{"phrase", "box"}]}`) give only
phrases with boxes: they train referring expressions and grounded captioning, never the
contrastive loss (Raon's separate grounding batches).

Anything wrong with one record raises `BadSample` with a reason; the batch builder counts it, logs
the shard and key, and moves on.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from training.data.tars import RawSample

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class BadSample(ValueError):
    """One record cannot be used; `reason` is a short stable label for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Sample:
    # Decoded RGB at its own aspect ratio; the batch builder cuts the model's views from it (the
    # square input, phase-2 local crops, phase-3 NaFlex patches). See open_rgb for its size.
    image: Image.Image
    caption: str | None  # None for grounding-only samples
    refs: list[dict] = field(default_factory=list)  # [{"phrase": str, "box": [x0, y0, x1, y1]}]
    contrastive: bool = True


def open_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode to RGB, as small as the format allows while both sides stay >= min_side (or the
    source's own size if smaller): JPEGs decode at the smallest DCT scale (1/2, 1/4, 1/8) that
    keeps them, far cheaper than a full decode when web images are much larger than needed.
    None: full resolution."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if min_side is not None:
                image.draft("RGB", (min_side, min_side))
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadSample("corrupt_image", str(error)) from error


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image → [3, H, W] float32 scaled to [-1, 1], as SigLIP does."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return pixels.float().div_(127.5).sub_(1.0)


def square_image(image: Image.Image, size: int) -> torch.Tensor:
    """Resize to size × size (antialiased bilinear) → [3, size, size] in [-1, 1].

    The square resize ignores aspect ratio on purpose: normalised boxes stay valid under it.
    """
    return to_tensor(image.resize((size, size), Image.Resampling.BILINEAR))


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """Decode and resize to the square model input [3, size, size] in [-1, 1]."""
    return square_image(open_rgb(data, size), size)


def _image_bytes(raw: RawSample) -> bytes:
    for extension in IMAGE_EXTENSIONS:
        if extension in raw.files:
            return raw.files[extension]
    raise BadSample("missing_image", f"files: {sorted(raw.files)}")


def _metadata(raw: RawSample, required: bool) -> dict:
    if "json" not in raw.files:
        if required:
            raise BadSample("missing_json")
        return {}
    try:
        meta = json.loads(raw.files["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadSample("bad_json", str(error)) from error
    if not isinstance(meta, dict):
        raise BadSample("bad_json", "not an object")
    return meta


def valid_refs(refs: object) -> list[dict]:
    """Keep refs with a non-empty phrase and a normalised box x0 < x1, y0 < y1 inside [0, 1]."""
    if not isinstance(refs, list):
        return []
    kept = []
    for ref in refs:
        if not isinstance(ref, dict):
            continue
        phrase, box = ref.get("phrase"), ref.get("box")
        if not isinstance(phrase, str) or not phrase.strip():
            continue
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            continue
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        if 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0:
            kept.append({"phrase": phrase.strip(), "box": [x0, y0, x1, y1]})
    return kept


def image_text_sample(raw: RawSample, min_side: int) -> Sample:
    if "txt" not in raw.files:
        raise BadSample("missing_text")
    try:
        caption = raw.files["txt"].decode("utf-8").strip()
    except UnicodeDecodeError as error:
        raise BadSample("bad_text", str(error)) from error
    if not caption:
        raise BadSample("missing_text", "empty caption")
    refs = valid_refs(_metadata(raw, required=False).get("refs"))
    return Sample(open_rgb(_image_bytes(raw), min_side), caption, refs, contrastive=True)


def grounding_sample(raw: RawSample, min_side: int) -> Sample:
    refs = valid_refs(_metadata(raw, required=True).get("refs"))
    if not refs:
        raise BadSample("no_valid_refs")
    return Sample(open_rgb(_image_bytes(raw), min_side), None, refs, contrastive=False)
