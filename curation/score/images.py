"""The one home for image decoding and re-encoding in curation, and a pixel-level signature.

- `decode_rgb`: bytes (or a lazily opened image) → an RGB image. JPEGs can be decoded at 1/2,
  1/4 or 1/8 scale in the DCT domain (`Image.draft`) when the caller needs less than full size,
  which skips most of the decoding work. Transparency is composited onto white, as img2dataset
  does: a transparent logo on white is what a browser shows, while dropping the alpha channel
  would expose whatever colour the transparent pixels happen to hold (often black). Pool and
  eval images are JPEGs, which have no alpha, so only PNG/GIF/WebP inputs see the difference.
- `resize_and_encode` / `encode_jpeg`: resize with a given filter and reducing gap, then encode
  as JPEG at a given quality. The grounding shards pass Pillow thumbnail()'s settings (LANCZOS,
  gap 2, quality 95, `fit_within`); the download stage resizes with BOX or LANCZOS, crops or
  pads, and encodes at --jpeg-quality.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

SIGNATURE_SIDE = 12
SIGNATURE_DIM = SIGNATURE_SIDE * SIGNATURE_SIDE * 3
WHITE = (255, 255, 255)


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image. `cause` is Pillow's exception; `truncated` says the
    file ended early (the download stage counts that apart from other corrupt images)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.truncated = isinstance(cause, OSError) and "truncated" in str(cause)


def draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    """The size that keeps the shorter side at `min_side` (the smallest a draft may go to)."""
    width, height = size
    scale = min_side / max(min(width, height), 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_rgb(
    data: bytes | Image.Image,
    min_side: int | None = None,
    wanted: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode to RGB, transparency composited onto white. A JPEG may come back DCT-downscaled:
    to at least `wanted` (width, height), or with its shorter side at least `min_side`.
    Raises ImageDecodeError."""
    try:
        image = Image.open(io.BytesIO(data)) if isinstance(data, bytes) else data
        if min_side is not None and wanted is None:
            wanted = draft_size(image.size, min_side)
        if wanted is not None and image.format == "JPEG":
            image.draft("RGB", wanted)  # picks the smallest DCT scale still >= wanted
        image.load()
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        )
        if has_alpha:
            rgba = image.convert("RGBA")
            flattened = Image.new("RGB", rgba.size, WHITE)
            flattened.paste(rgba, mask=rgba.getchannel("A"))
            return flattened
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad bytes
        raise ImageDecodeError(exc) from exc


def resize_and_encode(
    image: Image.Image,
    size: tuple[int, int],
    quality: int,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
    reducing_gap: float | None = None,
) -> tuple[bytes, Image.Image]:
    """JPEG bytes of `image` resized to `size` (untouched if it has that size already), and the
    image that was encoded."""
    if image.size != size:
        image = image.resize(size, resample, reducing_gap=reducing_gap)
    return encode_jpeg(image, quality), image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size Pillow's `thumbnail((max_side, max_side))` gives: aspect kept, no side over
    `max_side`, the free side rounded (down or up) to whichever keeps the aspect closer."""
    width, height = size
    x, y = min(width, max_side), min(height, max_side)
    aspect = width / height

    def closer(number: float, error: Callable[[int], float]) -> int:
        return max(min(math.floor(number), math.ceil(number), key=error), 1)

    if x / y >= aspect:
        x = closer(y * aspect, lambda n: abs(aspect - n / y))
    else:
        y = closer(x / aspect, lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


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
