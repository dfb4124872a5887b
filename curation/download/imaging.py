"""Decode, check, resize and re-encode one downloaded image (Pillow).

The header is read before any pixel is decoded, so a decompression bomb (a small file claiming
a huge canvas) is refused before it can allocate memory. JPEGs much larger than the target are
decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (`Image.draft`), which skips most of the
decoding work; benchmarks/download.py measures what that costs in PSNR. Resize modes follow
img2dataset's: `keep_ratio` (shorter side = size), `keep_ratio_largest` (longer side = size),
`center_crop` (shorter side = size, then a centred square), `border` (longer side = size, then
padded to a black square) and `no`. Decoding (transparency composited onto white) and JPEG
encoding are curation.score.images'.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from curation.download.reasons import (
    CORRUPT_IMAGE,
    DECOMPRESSION_BOMB,
    TRUNCATED_IMAGE,
    DownloadFailure,
)
from curation.score.images import ImageDecodeError, decode_rgb, encode_jpeg

RESIZE_MODES = ("keep_ratio_largest", "keep_ratio", "center_crop", "border", "no")

# We compare the header's pixel count to our own cap before decoding; Pillow's global check would
# only warn (or raise past twice its limit) and its limit is process-wide state.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


@dataclass(frozen=True)
class ImageOptions:
    image_size: int = 512
    resize_mode: str = "keep_ratio_largest"
    max_pixels: int = 80_000_000
    jpeg_quality: int = 95
    use_draft: bool = True

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"resize mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}"
            )
        if self.image_size < 1:
            raise ValueError(f"image size must be positive, got {self.image_size}")


@dataclass(frozen=True)
class ProcessedImage:
    jpeg: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    sha256: str


def scaled_size(width: int, height: int, options: ImageOptions) -> tuple[int, int]:
    """The size the whole image is resized to, before any crop or border."""
    if options.resize_mode == "no":
        return width, height
    if options.resize_mode in ("keep_ratio", "center_crop"):
        scale = options.image_size / min(width, height)
    else:
        scale = options.image_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse unreadable headers and oversized canvases."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DownloadFailure(DECOMPRESSION_BOMB, str(exc)) from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DownloadFailure(CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise DownloadFailure(CORRUPT_IMAGE, f"empty canvas {width}x{height}")
    if width * height > max_pixels:
        raise DownloadFailure(DECOMPRESSION_BOMB, f"{width}x{height} is over {max_pixels} pixels")
    return image


def decoded(image: Image.Image, wanted: tuple[int, int] | None) -> Image.Image:
    """decode_rgb, its failures as download reasons (the message as the sidecar has it)."""
    try:
        return decode_rgb(image, wanted=wanted)
    except ImageDecodeError as exc:
        if isinstance(exc.cause, OSError):
            reason = TRUNCATED_IMAGE if exc.truncated else CORRUPT_IMAGE
            raise DownloadFailure(reason, str(exc.cause)) from None
        raise DownloadFailure(CORRUPT_IMAGE, str(exc)) from None


def resize_rgb(image: Image.Image, original: tuple[int, int], options: ImageOptions) -> Image.Image:
    target = scaled_size(*original, options)
    if image.size != target:
        downscaling = target[0] < image.size[0]
        image = image.resize(
            target, Image.Resampling.BOX if downscaling else Image.Resampling.LANCZOS
        )
    size = options.image_size
    if options.resize_mode == "center_crop":
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    elif options.resize_mode == "border":
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        image = canvas
    return image


def process_image(data: bytes, options: ImageOptions) -> ProcessedImage:
    """JPEG bytes of the resized image plus its sizes and hash; raises DownloadFailure."""
    image = open_checked(data, options.max_pixels)
    original = image.size
    wanted = (
        scaled_size(*original, options)
        if options.use_draft and options.resize_mode != "no"
        else None
    )
    try:
        rgb = resize_rgb(decoded(image, wanted), original, options)
        jpeg = encode_jpeg(rgb, options.jpeg_quality)
    except DownloadFailure:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DownloadFailure(CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}") from None
    return ProcessedImage(
        jpeg, rgb.width, rgb.height, original[0], original[1], hashlib.sha256(jpeg).hexdigest()
    )
