from pathlib import Path

import pytest

from training.data.shards import ConsumerPlan, expand_shard_urls


def test_brace_and_glob_patterns_expand_to_the_same_sorted_shards(shard_world):
    braced = expand_shard_urls(shard_world.text_pattern)
    globbed = expand_shard_urls(str(shard_world.root / "text-*.tar"))
    assert braced == globbed
    assert [Path(u).name for u in braced] == [f"text-{i:05d}.tar" for i in range(4)]


def test_missing_shard_or_empty_glob_fails_at_startup_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-00000.tar"):
        expand_shard_urls(str(tmp_path / "nothing-{00000..00001}.tar"))
    with pytest.raises(FileNotFoundError, match="matches no files"):
        expand_shard_urls(str(tmp_path / "*.tar"))


def test_consumers_split_an_epoch_into_disjoint_covering_shard_sets():
    urls = tuple(f"s{i}.tar" for i in range(7))
    plans = [ConsumerPlan(urls, c, 3, seed=5, stream_id=0) for c in range(3)]
    per_consumer = [plan.shards_for_epoch(2) for plan in plans]
    assert sorted(u for shards in per_consumer for u in shards) == sorted(urls)
    assert all(plan.keeps_sample(i) for plan in plans for i in range(5))


def test_epochs_reshuffle_shards_reproducibly_from_the_seed():
    urls = tuple(f"s{i}.tar" for i in range(16))
    plan = ConsumerPlan(urls, 0, 1, seed=1, stream_id=0)
    assert plan.shards_for_epoch(0) != plan.shards_for_epoch(1)
    assert plan.shards_for_epoch(1) == ConsumerPlan(urls, 0, 1, 1, 0).shards_for_epoch(1)
    assert plan.shards_for_epoch(0) != ConsumerPlan(urls, 0, 1, 2, 0).shards_for_epoch(0)


def test_fewer_shards_than_consumers_splits_by_sample_instead():
    plans = [ConsumerPlan(("only.tar",), c, 4, seed=0, stream_id=1) for c in range(4)]
    assert all(plan.shards_for_epoch(0) == ["only.tar"] for plan in plans)
    owners = [[c for c, plan in enumerate(plans) if plan.keeps_sample(i)] for i in range(12)]
    assert owners == [[i % 4] for i in range(12)]
