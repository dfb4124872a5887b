"""The scorer's input: uint8 batches normalised where the model runs equal the eval transform."""

from dataclasses import asdict

import numpy as np
import pytest
import torch
from open_clip.transform import PreprocessCfg
from PIL import Image

from curation.score.embedder import build_image_geometry, build_transform, normalise_batch


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
