"""The one image module: decode (alpha onto white, DCT drafts), resize-and-encode, thumbnail sizes."""

import io

import pytest
from PIL import Image

from curation.score.images import (
    ImageDecodeError,
    decode_rgb,
    fit_within,
    resize_and_encode,
)


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def test_transparent_pixels_decode_as_white_whatever_colour_they_hold():
    image = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # transparent black
    image.putpixel((0, 0), (200, 10, 10, 255))
    rgb = decode_rgb(encoded(image, "PNG"))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (200, 10, 10) and rgb.getpixel((3, 1)) == (255, 255, 255)
    palette = image.convert("P")
    palette.info["transparency"] = palette.getpixel((3, 1))
    assert decode_rgb(encoded(palette, "PNG", transparency=palette.info["transparency"])).getpixel(
        (3, 1)
    ) == (255, 255, 255)


def test_a_jpeg_decodes_at_a_dct_scale_that_keeps_the_shorter_side_or_the_wanted_size():
    data = encoded(Image.new("RGB", (800, 400), (9, 99, 199)), "JPEG", quality=90)
    assert decode_rgb(data).size == (800, 400)
    assert decode_rgb(data, min_side=100).size == (200, 100)  # 1/4: shorter side exactly 100
    assert decode_rgb(data, min_side=101).size == (400, 200)  # 1/4 would go below 101
    assert decode_rgb(data, wanted=(150, 75)).size == (200, 100)


@pytest.mark.parametrize("data", [b"not an image", b"\xff\xd8\xff\xe0" + b"\0" * 40])
def test_undecodable_bytes_raise_one_error_type_naming_the_cause(data):
    with pytest.raises(ImageDecodeError) as info:
        decode_rgb(data)
    assert type(info.value.cause).__name__ in str(info.value)


def test_truncated_images_are_told_apart():
    data = encoded(Image.effect_noise((300, 200), 60).convert("RGB"), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        decode_rgb(data[: len(data) // 2])
    assert info.value.truncated


def test_fit_within_is_the_size_pillow_thumbnail_gives():
    for width, height, side in [(1000, 3, 100), (3, 1000, 100), (640, 480, 333), (5, 7, 2)]:
        image = Image.new("RGB", (width, height))
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        assert fit_within((width, height), side) == image.size


def test_resize_and_encode_leaves_an_image_of_the_target_size_unresized():
    image = Image.effect_noise((64, 48), 40).convert("RGB")
    jpeg, stored = resize_and_encode(image, (64, 48), 90)
    assert stored is image and Image.open(io.BytesIO(jpeg)).size == (64, 48)
    jpeg, stored = resize_and_encode(image, (32, 24), 90, Image.Resampling.BICUBIC, 3.0)
    assert stored.size == (32, 24) and Image.open(io.BytesIO(jpeg)).size == (32, 24)
