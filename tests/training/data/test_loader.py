import logging

import pytest
import torch

from training.data.batches import BatchShape
from training.data.loader import LoaderSpec, PackedBatch, ResumableLoader
from training.tokenizer import Tokenizer

SHAPE = BatchShape(
    batch_size=8, grounding_per_batch=2, image_size=32, context_length=64, locca_max_len=32
)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def _loader(world, tokenizer, num_workers=0, rank=0, world_size=1, shape=SHAPE):
    spec = LoaderSpec(
        world.text_pattern,
        world.grounding_pattern,
        shape,
        seed=7,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
    )
    return ResumableLoader(spec, tokenizer)


def _take(loader, count):
    return [next(loader) for _ in range(count)]


def _assert_same_batches(left, right):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_every_batch_has_the_exact_grounding_share_last_and_non_contrastive(shard_world, tokenizer):
    for batch in _take(_loader(shard_world, tokenizer), 3):
        assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["text"].shape == (8, 64)
        assert batch["contrastive"].tolist() == [True] * 6 + [False] * 2
        # grounding rows carry ARef/GCap targets but no caption target
        assert not batch["locca_caption_target_mask"][6:].any()
        assert batch["locca_aref_target_mask"][6:].sum(dim=1).tolist() == [4, 4]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_resumed_from_its_state_yields_exactly_the_remaining_batches(
    shard_world, tokenizer, num_workers
):
    reference = _take(_loader(shard_world, tokenizer, num_workers), 9)
    for cut in (3, 4):
        first = _loader(shard_world, tokenizer, num_workers)
        head = _take(first, cut)
        resumed = _loader(shard_world, tokenizer, num_workers)
        resumed.load_state_dict(first.state_dict())
        _assert_same_batches(head + _take(resumed, 9 - cut), reference)


def test_resume_with_another_worker_count_is_refused(shard_world, tokenizer):
    first = _loader(shard_world, tokenizer, num_workers=0)
    next(first)
    with pytest.raises(ValueError, match="num_workers"):
        _loader(shard_world, tokenizer, num_workers=2).load_state_dict(first.state_dict())


def test_bad_records_are_counted_and_logged_with_shard_and_key(shard_world, tokenizer, caplog):
    loader = _loader(shard_world, tokenizer)
    text_samples = sum(len(keys) for keys in shard_world.text_keys)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        _take(loader, text_samples // SHAPE.text_per_batch + 1)  # a full epoch of text
    assert loader.bad_samples == {"text/corrupt_image": 1, "text/missing_text": 1}
    for key in shard_world.bad_text_keys:
        assert key in caplog.text
    assert "text-00001.tar" in caplog.text and "text-00002.tar" in caplog.text


def test_ranks_draw_different_samples(shard_world, tokenizer):
    rank0 = next(_loader(shard_world, tokenizer, rank=0, world_size=2))
    rank1 = next(_loader(shard_world, tokenizer, rank=1, world_size=2))
    assert rank0["contrastive"].tolist() == rank1["contrastive"].tolist()
    assert not torch.equal(rank0["image"], rank1["image"])


def test_packed_batch_round_trips_every_tensor_exactly():
    batch = {
        "image": torch.randn(3, 3, 5, 5),
        "text": torch.randint(0, 50_000, (3, 7)),
        "mask": torch.rand(3, 7) > 0.5,
        "odd": torch.arange(5, dtype=torch.int16),  # 10 bytes: the next tensor must realign
        "half": torch.randn(2, 3).to(torch.bfloat16),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4, dtype=torch.int64),
        "transposed": torch.arange(12, dtype=torch.int32).reshape(3, 4).T,  # not contiguous
    }
    packed = PackedBatch.pack(batch)
    unpacked = packed.unpack()
    assert list(unpacked) == list(batch)
    for name, tensor in batch.items():
        assert unpacked[name].dtype == tensor.dtype and unpacked[name].shape == tensor.shape, name
        assert torch.equal(unpacked[name], tensor), name
    # one buffer behind every tensor: views, not copies
    assert all(
        t.untyped_storage().data_ptr() == packed.buffer.untyped_storage().data_ptr()
        for t in unpacked.values()
    )


def test_worker_batches_arrive_packed_and_equal_the_in_process_ones(shard_world, tokenizer):
    in_process = _take(_loader(shard_world, tokenizer, num_workers=0), 2)
    loader = _loader(shard_world, tokenizer, num_workers=1)
    from_worker = _take(loader, 2)
    _assert_same_batches(from_worker, in_process)
    image = from_worker[0]["image"]
    assert image.untyped_storage().nbytes() > image.numel() * image.element_size()  # one block


def test_a_loader_of_another_layout_continues_at_the_next_epoch_and_step(shard_world, tokenizer):
    # Saved by 2 ranks after 2 steps; resumed by 3 ranks with one loader worker each.
    saved = []
    for rank in (0, 1):
        loader = _loader(shard_world, tokenizer, rank=rank, world_size=2)
        _take(loader, 2)
        saved.append(loader.state_dict())
    epochs = {
        name: max(c["positions"][name]["epoch"] for s in saved for c in s["consumers"])
        for name in ("text", "grounding")
    }
    bad_so_far = sum(_loader_bad(s) for s in saved)
    resumed = [_loader(shard_world, tokenizer, rank=r, world_size=3) for r in range(3)]
    for loader in resumed:
        loader.continue_after(saved, step=2)
        state = loader.state_dict()["consumers"][0]
        assert state["step"] == 2
        assert {name: state["positions"][name]["epoch"] for name in epochs} == {
            name: epoch + 1 for name, epoch in epochs.items()
        }
    assert sum(_loader_bad(loader.state_dict()) for loader in resumed) == bad_so_far
    # The three ranks split the new epoch among themselves.
    batches = [next(loader) for loader in resumed]
    assert not torch.equal(batches[0]["image"], batches[1]["image"])


def _loader_bad(state) -> int:
    return sum(sum(c["bad_samples"].values()) for c in state["consumers"])
