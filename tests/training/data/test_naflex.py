"""Phase-3 NaFlex batches: the patch grid, the per-step length, padding, and the loader."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from training.data.batches import BatchShape
from training.data.loader import LoaderSpec, ResumableLoader
from training.data.naflex import NaFlexSchedule, naflex_batch, patch_grid
from training.data.samples import to_tensor
from training.models.config import model_config
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer


def brute_force_grid(height, width, patch, seq_len):
    """The largest rows × cols <= seq_len over every scale where a side changes."""
    scales = {k * patch / side for side in (height, width) for k in range(1, seq_len + 2)}
    best = (1, 1)
    for scale in sorted(scales):
        rows = min(seq_len, max(1, math.floor(height * scale / patch)))
        cols = min(seq_len, max(1, math.floor(width * scale / patch)))
        if rows * cols <= seq_len and rows * cols >= best[0] * best[1]:
            best = (rows, cols)
    return best


@pytest.mark.parametrize(
    "height, width", [(64, 64), (48, 96), (120, 40), (24, 160), (7, 1000), (333, 517), (1000, 9)]
)
@pytest.mark.parametrize("seq_len", [16, 32, 64, 144, 256])
def test_patch_grid_is_the_largest_aspect_preserving_grid_within_the_length(height, width, seq_len):
    rows, cols = patch_grid(height, width, 8, seq_len)
    assert rows * cols <= seq_len
    assert rows * cols == math.prod(brute_force_grid(height, width, 8, seq_len))
    if min(rows, cols) >= 4:  # aspect kept to within a patch on each side
        assert (rows - 1) / (cols + 1) <= height / width <= (rows + 1) / (cols - 1)


def test_the_sequence_length_depends_only_on_the_seed_and_the_step():
    schedule = NaFlexSchedule(start_step=10, seq_lens=(32, 64, 144), token_budget=512, seed=3)
    again = NaFlexSchedule(start_step=10, seq_lens=(32, 64, 144), token_budget=512, seed=3)
    assert [schedule.seq_len(step) for step in range(10)] == [None] * 10
    lengths = [schedule.seq_len(step) for step in range(10, 210)]
    assert lengths == [again.seq_len(step) for step in range(10, 210)]
    assert set(lengths) == {32, 64, 144}
    other_seed = NaFlexSchedule(10, (32, 64, 144), 512, seed=4)
    assert lengths != [other_seed.seq_len(step) for step in range(10, 210)]
    assert [schedule.batch_size(length, 8) for length in (32, 64, 144)] == [8, 8, 3]


def test_a_naflex_batch_gives_each_image_the_outputs_of_its_own_resized_grid():
    torch.manual_seed(0)
    model = SigLIP2(model_config("tiny")).eval()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(48, 96), (120, 40), (30, 200), (64, 64)]
    ]
    batch = naflex_batch(images, patch=8, seq_len=64)
    assert batch["patches"].shape == (4, 64, 8 * 8 * 3)
    pooled, tokens = model.encode_image(**batch)
    for row, image in enumerate(images):
        rows, cols = patch_grid(image.height, image.width, 8, 64)
        assert batch["patch_mask"][row].sum() == rows * cols
        alone = to_tensor(image.resize((cols * 8, rows * 8), Image.Resampling.BILINEAR))[None]
        alone_pooled, alone_tokens = model.encode_image(alone)
        torch.testing.assert_close(pooled[row], alone_pooled[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            tokens[row, : rows * cols], alone_tokens[0], rtol=1e-4, atol=1e-5
        )


SHAPE = BatchShape(
    batch_size=8,
    grounding_per_batch=2,
    image_size=64,
    context_length=64,
    locca_max_len=32,
    patch_size=8,
)
NAFLEX = NaFlexSchedule(start_step=2, seq_lens=(32, 64, 256), token_budget=8 * 64, seed=7)


def naflex_loader(world, num_workers=0):
    spec = LoaderSpec(
        world.text_pattern,
        world.grounding_pattern,
        SHAPE,
        seed=7,
        num_workers=num_workers,
        naflex=NAFLEX,
    )
    return ResumableLoader(spec, Tokenizer())


@pytest.mark.parametrize("world_name", ["native_world", "shard_world"])
def test_phase3_batches_are_padded_patch_sets_sized_by_the_token_budget(request, world_name):
    loader = naflex_loader(request.getfixturevalue(world_name))
    for step in range(8):
        batch = next(loader)
        if step < 2:
            assert batch["image"].shape == (8, 3, 64, 64) and "patches" not in batch
            continue
        length = NAFLEX.seq_len(step)
        size = NAFLEX.batch_size(length, 8)
        assert "image" not in batch
        assert batch["patches"].shape == (size, length, 192)
        assert batch["patch_coords"].shape == (size, length, 2)
        assert batch["text"].shape[0] == batch["contrastive"].shape[0] == size
        grounding = (~batch["contrastive"]).sum().item()
        assert grounding == max(1, round(size * 2 / 8)) and grounding < size
        mask = batch["patch_mask"]
        real = mask.sum(dim=1)
        assert (real <= length).all() and (real >= length // 2).all()
        # Padding is zero; real patches come first, in row-major grid order.
        assert not batch["patches"][~mask].any()
        for row in range(size):
            coords = batch["patch_coords"][row, : real[row]]
            rows, cols = int(coords[:, 0].max()) + 1, int(coords[:, 1].max()) + 1
            assert rows * cols == real[row]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_resumed_inside_phase_3_yields_the_same_lengths_and_samples(
    native_world, num_workers
):
    loader = naflex_loader(native_world, num_workers)
    reference = [next(loader) for _ in range(7)]
    first = naflex_loader(native_world, num_workers)
    head = [next(first) for _ in range(3)]
    resumed = naflex_loader(native_world, num_workers)
    resumed.load_state_dict(first.state_dict())
    for expected, got in zip(reference, head + [next(resumed) for _ in range(4)], strict=True):
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), key
