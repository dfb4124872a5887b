import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from curation.download.imaging import ImageOptions, process_image, scaled_size
from curation.download.reasons import DownloadFailure


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus texture: closer to a photo than a flat colour (for PSNR checks)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    blobs = sum(
        60 * np.sin(x / rng.uniform(8, 40) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(8, 40))
        for _ in range(4)
    )
    noise = rng.normal(0, 6, (height, width, 1))
    return Image.fromarray(np.clip(base + blobs[..., None] + noise, 0, 255).astype(np.uint8))


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    "mode, source, expected",
    [
        ("keep_ratio_largest", (1000, 500), (512, 256)),
        ("keep_ratio", (1000, 500), (1024, 512)),
        ("center_crop", (1000, 500), (512, 512)),
        ("border", (500, 1000), (512, 512)),
        ("no", (300, 200), (300, 200)),
        (
            "keep_ratio_largest",
            (100, 50),
            (512, 256),
        ),  # small images are upscaled, as img2dataset does
    ],
)
def test_resize_modes_give_img2dataset_sizes(mode, source, expected):
    result = process_image(encode(photo_like(*source)), ImageOptions(512, mode))
    assert (result.width, result.height) == expected
    assert (result.original_width, result.original_height) == source
    assert decode(result.jpeg).size == expected
    assert result.sha256 == hashlib.sha256(result.jpeg).hexdigest()


def test_border_pads_with_black_and_keeps_the_picture_centred():
    white = Image.new("RGB", (400, 100), (255, 255, 255))
    pixels = np.asarray(decode(process_image(encode(white), ImageOptions(200, "border")).jpeg))
    assert pixels[:40].mean() < 10 and pixels[-40:].mean() < 10 and pixels[100].mean() > 245


def test_draft_decode_matches_a_full_decode_resize():
    source = encode(photo_like(2048, 1536, seed=3), quality=92)
    options = ImageOptions(256, "keep_ratio_largest")
    fast = process_image(source, options)
    full = process_image(source, ImageOptions(256, "keep_ratio_largest", use_draft=False))
    assert (fast.width, fast.height) == (full.width, full.height) == (256, 192)
    a = np.asarray(decode(fast.jpeg), dtype=np.float64)
    b = np.asarray(decode(full.jpeg), dtype=np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
    assert psnr > 30, psnr


def test_transparency_is_flattened_onto_white():
    clear = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    result = process_image(encode(clear, "PNG"), ImageOptions(32, "no"))
    assert np.asarray(decode(result.jpeg)).min() > 245


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge canvas (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("width, height", [(12_000, 12_000), (100_000, 100_000)])
def test_decompression_bombs_are_refused_from_the_header(width, height):
    with pytest.raises(DownloadFailure) as caught:
        process_image(png_claiming(width, height), ImageOptions(max_pixels=80_000_000))
    assert caught.value.reason == "decompression_bomb"


def test_pixel_cap_is_configurable():
    with pytest.raises(DownloadFailure, match="decompression_bomb"):
        process_image(encode(photo_like(200, 200)), ImageOptions(max_pixels=10_000))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\xff\xd8\xff\xe0" + b"\x13" * 500, "corrupt_image"),
        (b"not an image at all", "corrupt_image"),
    ],
)
def test_corrupt_bytes_are_rejected_with_a_reason(data, reason):
    with pytest.raises(DownloadFailure) as caught:
        process_image(data, ImageOptions())
    assert caught.value.reason == reason


def test_truncated_jpeg_is_rejected_as_truncated():
    whole = encode(photo_like(400, 300), quality=90)
    with pytest.raises(DownloadFailure) as caught:
        process_image(whole[: len(whole) // 2], ImageOptions(128))
    assert caught.value.reason == "truncated"


def test_unknown_resize_mode_is_a_configuration_error():
    with pytest.raises(ValueError, match="resize mode"):
        ImageOptions(resize_mode="stretch")


def test_scaled_size_never_collapses_to_zero():
    assert scaled_size(10_000, 3, ImageOptions(64, "keep_ratio_largest")) == (64, 1)
