"""Image decoding for scoring, and a pixel-level signature for duplicate search."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SIGNATURE_SIDE = 12
SIGNATURE_DIM = SIGNATURE_SIDE * SIGNATURE_SIDE * 3


class ImageDecodeError(ValueError):
    pass


def decode_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode to RGB; with `min_side`, let libjpeg downscale in the DCT domain (1/2, 1/4, 1/8)
    while keeping the shorter side at least `min_side`, which is far cheaper than a full decode."""
    try:
        image = Image.open(io.BytesIO(data))
        if min_side is not None and image.format == "JPEG":
            width, height = image.size
            scale = min_side / max(min(width, height), 1)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        return image.convert("RGB")
    except Exception as exc:
        raise ImageDecodeError(f"{type(exc).__name__}: {exc}") from exc


def pixel_signature(image: Image.Image) -> np.ndarray:
    """A 12x12 RGB thumbnail, mean-centred and unit-normed (432 floats): a pixel-level embedding.

    Two images' signatures have cosine ~1 when one is a re-encoded, rescaled or slightly
    brightened copy of the other, independently of any trained model. Measured (cosine): exact
    copies, re-encodes and resizes >= 0.999 on a tiny mini Common Crawl pool and on the test
    fixtures; distinct pictures <= 0.906 (mini CC) and <= 0.941 (fixtures, whose flat coloured
    backgrounds dominate); 5% crops 0.87-0.93, so crops are left to the CLIP embeddings. 8x8 was
    tighter (distinct up to 0.952) and a 64-bit dHash worse still: on flat synthetic backgrounds
    distinct pictures often share it exactly. A flat grey image has no signature (all zeros).
    """
    thumb = np.asarray(
        image.resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.BILINEAR), dtype=np.float32
    )
    vector = thumb.ravel() - thumb.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-3 else np.zeros_like(vector)
