"""Image decoding for scoring and a 64-bit difference hash for pixel-level duplicate search."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

HASH_SIDE = 8  # an 8x8 grid of left-right brightness comparisons = 64 bits


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


def difference_hash(image: Image.Image) -> int:
    """dHash: is each pixel brighter than its right neighbour on a 9x8 grey thumbnail.

    It survives re-encoding, resizing and mild colour or brightness shifts, which is what separates
    a re-uploaded copy from a different picture when the embedding model is not trained yet.
    Returned as a signed 64-bit integer (Parquet and faiss have no unsigned 64-bit type).
    """
    grey = np.asarray(image.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.BILINEAR),
                      dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    value = int(np.packbits(bits).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value


def hashes_to_bytes(hashes: np.ndarray) -> np.ndarray:
    """int64 hashes -> uint8 [n, 8] rows, the layout faiss binary indexes take."""
    return np.ascontiguousarray(hashes.astype(">i8")).view(np.uint8).reshape(-1, 8)
