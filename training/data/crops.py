"""Local crops for phase 2 (SILC's student views): random-resized crops of the decoded original.

Crops are cut from the decoded source image (its own aspect ratio, at least `crop_source_side`
pixels on its shorter side when the source has them), not from the square model input: a crop of
a 64-pixel square would be an upsampled blur of a distorted image, while a crop of the original
holds real detail. The crop boxes come from a generator seeded by the sample's identity (see
batches.crops_rng), so a resumed run, any number of loader workers, and a re-built prefetched
batch all see the same crops.
"""

from __future__ import annotations

import math
import random

import torch
from PIL import Image

from training.data.samples import to_tensor

# Share of the image area a local crop covers, and its aspect-ratio range (DINO-style local views).
LOCAL_SCALE = (0.05, 0.4)
LOCAL_RATIO = (3 / 4, 4 / 3)


def crop_source_side(crop_size: int) -> int:
    """Shorter side the decoded source needs so that even the smallest crop (LOCAL_SCALE[0] of
    the area) is cut at no less than `crop_size` pixels."""
    return math.ceil(crop_size / math.sqrt(LOCAL_SCALE[0]))


def crop_box(
    height: int,
    width: int,
    rng: random.Random,
    scale: tuple[float, float] = LOCAL_SCALE,
    ratio: tuple[float, float] = LOCAL_RATIO,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop with area share in `scale` and log-uniform aspect ratio in
    `ratio`, clamped to fit the image."""
    area = height * width * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    crop_h = min(height, max(1, round(math.sqrt(area / aspect))))
    crop_w = min(width, max(1, round(math.sqrt(area * aspect))))
    return rng.randint(0, height - crop_h), rng.randint(0, width - crop_w), crop_h, crop_w


def random_resized_crops(
    image: Image.Image, count: int, size: int, rng: random.Random
) -> torch.Tensor:
    """`count` crops of the RGB `image`, each resized (antialiased bilinear) to size × size:
    [count, 3, size, size] in [-1, 1]."""
    width, height = image.size
    crops = []
    for _ in range(count):
        top, left, crop_h, crop_w = crop_box(height, width, rng)
        box = (left, top, left + crop_w, top + crop_h)
        crops.append(to_tensor(image.resize((size, size), Image.Resampling.BILINEAR, box=box)))
    return torch.stack(crops)
