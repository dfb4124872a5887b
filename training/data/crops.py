"""Local crops for phase 2 (SILC's student views): random-resized crops of the decoded image.

The crop boxes come from a generator seeded by the sample's identity (see batches.sample_rng), so
a resumed run, any number of loader workers, and a re-built prefetched batch all see the same
crops.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

# Share of the image area a local crop covers, and its aspect-ratio range (DINO-style local views).
LOCAL_SCALE = (0.05, 0.4)
LOCAL_RATIO = (3 / 4, 4 / 3)


def crop_box(height: int, width: int, rng: random.Random,
             scale: tuple[float, float] = LOCAL_SCALE,
             ratio: tuple[float, float] = LOCAL_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop with area share in `scale` and log-uniform aspect ratio in
    `ratio`, clamped to fit the image."""
    area = height * width * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    crop_h = min(height, max(1, round(math.sqrt(area / aspect))))
    crop_w = min(width, max(1, round(math.sqrt(area * aspect))))
    return rng.randint(0, height - crop_h), rng.randint(0, width - crop_w), crop_h, crop_w


def random_resized_crops(image: torch.Tensor, count: int, size: int,
                         rng: random.Random) -> torch.Tensor:
    """`count` crops of `image` [3, H, W], each resized (antialiased) to size × size: [count, 3,
    size, size]."""
    _, height, width = image.shape
    crops = []
    for _ in range(count):
        top, left, crop_h, crop_w = crop_box(height, width, rng)
        patch = image[None, :, top : top + crop_h, left : left + crop_w]
        crops.append(F.interpolate(patch, size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=True)[0])
    return torch.stack(crops)
