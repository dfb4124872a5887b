"""A tiny WebDataset world for trainer tests: 4 image-text shards of 12 samples (one corrupt
JPEG, one missing caption) and one grounding shard of 10 samples, written once per session."""

from __future__ import annotations

import pytest

from training.data.synthetic import SyntheticShards, write_synthetic_shards


@pytest.fixture(scope="session")
def shard_world(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShards:
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="session")
def native_world(tmp_path_factory: pytest.TempPathFactory) -> SyntheticShards:
    """The same world at native sizes: wide, tall, square and extreme aspect ratios (what
    curation's `shards --keep-source-size` writes), for phase 3 (NaFlex)."""
    return write_synthetic_shards(
        tmp_path_factory.mktemp("native"),
        image_shapes=[(48, 96), (120, 40), (64, 64), (24, 160), (90, 72)],
    )
