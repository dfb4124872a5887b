"""The scorer's input: uint8 batches normalised where the model runs equal the eval transform."""

import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from open_clip.transform import PreprocessCfg
from PIL import Image
from torchvision.transforms import Compose

from curation.score.embedder import (
    ShortestSideCrop,
    build_image_geometry,
    build_transform,
    normalise_batch,
)


@pytest.mark.parametrize(
    "overrides",
    [{"size": 224}, {"size": 64, "resize_mode": "squash"}, {"size": 96, "resize_mode": "longest"}],
)
def test_geometry_then_batch_normalisation_equals_the_per_image_transform(overrides):
    cfg = {**asdict(PreprocessCfg()), **overrides}
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in ((300, 500), (640, 200), (224, 224), (31, 47))
    ]
    expected = torch.stack([build_transform(cfg)(image) for image in images])
    geometry = build_image_geometry(cfg)
    batch = np.stack([np.asarray(geometry(image)) for image in images])
    assert batch.dtype == np.uint8 and batch.shape[-1] == 3
    got = normalise_batch(torch.from_numpy(batch), cfg["mean"], cfg["std"])
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("size", "interpolation"), [(224, "bicubic"), (64, "bilinear"), (97, "bicubic")]
)
def test_pillow_geometry_equals_open_clips_shortest_side_transform(size, interpolation):
    cfg = {**asdict(PreprocessCfg()), "size": size, "interpolation": interpolation}
    geometry = build_image_geometry(cfg)
    assert isinstance(geometry, ShortestSideCrop)
    reference = Compose(build_transform(cfg).transforms[:3])  # Resize, CenterCrop, mode
    assert [type(t).__name__ for t in reference.transforms][:2] == ["Resize", "CenterCrop"]
    rng = np.random.default_rng(size)
    sides = [(size, size), (size + 1, size), (size, size + 3), (7, 5), (1, 900), (900, 1)]
    sides += [tuple(int(v) for v in rng.integers(1, 1500, 2)) for _ in range(60)]
    for width, height in sides:
        for mode in ("RGB", "L", "RGBA"):
            channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
            pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
            image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
            ours, theirs = geometry(image), reference(image)
            assert ours.mode == theirs.mode == "RGB" and ours.size == theirs.size == (size, size)
            assert np.array_equal(np.asarray(ours), np.asarray(theirs)), (width, height, mode)


def test_a_decoding_process_never_imports_torch():
    # The score stage's shard tasks only decode, resize and crop: with open_clip's default
    # preprocessing they must not load torch, torchvision or open_clip (~6 s, ~700 MB each).
    cfg = {**asdict(PreprocessCfg()), "size": 64}
    script = f"""
import io, json, sys
import numpy as np
from PIL import Image
from curation.score.embedder import build_image_geometry
from curation.score.images import decode_rgb, pixel_signature
buffer = io.BytesIO()
Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(buffer, "JPEG")
image = decode_rgb(buffer.getvalue(), min_side=64)
pixel_signature(image)
geometry = build_image_geometry(json.loads({json.dumps(json.dumps(cfg))}))
assert np.asarray(geometry(image)).shape == (64, 64, 3)
loaded = [name for name in ("torch", "torchvision", "open_clip") if name in sys.modules]
print(json.dumps(loaded))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
