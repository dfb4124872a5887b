"""Phase-2 local crops: seeded, inside the image, and cut from the original resolution."""

import io
import random

import numpy as np
import torch
from PIL import Image

from training.data.batches import BatchShape, assemble_batch, crops_rng
from training.data.crops import crop_source_side, random_resized_crops
from training.data.samples import Sample, open_rgb
from training.data.stream import StreamPosition
from training.tokenizer import Tokenizer


def test_random_resized_crops_are_seeded_and_come_from_the_image():
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:32] = 255  # top half white, bottom half black
    image = Image.fromarray(pixels)
    first = random_resized_crops(image, 6, 16, random.Random("a"))
    assert torch.equal(first, random_resized_crops(image, 6, 16, random.Random("a")))
    assert not torch.equal(first, random_resized_crops(image, 6, 16, random.Random("b")))
    assert first.shape == (6, 3, 16, 16)
    assert first.min() >= -1.0 - 1e-5 and first.max() <= 1.0 + 1e-5
    # Crops of at most 40% of the area: none can hold the whole image (half white, half black).
    means = first.mean(dim=(1, 2, 3))
    assert not torch.allclose(means, torch.zeros_like(means), atol=0.02)


def photo_jpeg(height: int, width: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_local_crops_are_cut_from_the_decoded_original_not_from_the_square_input():
    shape = BatchShape(
        batch_size=1,
        grounding_per_batch=0,
        image_size=64,
        context_length=16,
        locca_max_len=16,
        local_crops=4,
        local_crop_size=24,
    )
    # Even the smallest crop (5% of the area) is cut at >= 24 px: the decoder keeps more than
    # the 64-px square input needs (here a 1/4-scale JPEG decode of 256 x 128, not 1/8).
    assert shape.decode_min_side == crop_source_side(24) > 64
    image = open_rgb(photo_jpeg(512, 1024), shape.decode_min_side)
    assert image.size == (256, 128)
    position = StreamPosition()
    batch = assemble_batch([("text", Sample(image, "noise"), position)], Tokenizer(), shape, 0)
    assert batch["image"].shape == (1, 3, 64, 64)
    expected = random_resized_crops(image, 4, 24, crops_rng(0, "text", position))
    torch.testing.assert_close(batch["local_crops"][0], expected)
