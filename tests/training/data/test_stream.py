import itertools
import logging
import tarfile

import pytest

from training.data.shards import ConsumerPlan, expand_shard_urls
from training.data.stream import ShardReadError, StreamPosition, iter_stream
from training.data.tars import iter_tar_samples, split_member_name


def test_member_names_split_into_key_and_extension_like_webdataset():
    assert split_member_name("dir/abc.seg.png") == ("dir/abc", "seg.png")
    assert split_member_name("00001.JPG") == ("00001", "jpg")


def test_tar_samples_group_files_by_key_in_file_order(shard_world):
    samples = list(iter_tar_samples(str(shard_world.root / "text-00000.tar")))
    assert [s.key for s in samples] == shard_world.text_keys[0]
    assert set(samples[0].files) == {"jpg", "txt", "json"}


def _plan(world, consumer=0, consumers=1):
    return ConsumerPlan(tuple(expand_shard_urls(world.text_pattern)), consumer, consumers, 3, 0)


def test_one_epoch_reads_every_sample_once_then_the_next_epoch_starts(shard_world):
    total = sum(len(keys) for keys in shard_world.text_keys)
    items = list(itertools.islice(iter_stream(_plan(shard_world), StreamPosition()), total + 1))
    assert sorted(i.sample.key for i in items[:total]) == sorted(
        k for keys in shard_world.text_keys for k in keys
    )
    assert items[total].position == StreamPosition(1, 0, 0)


def test_stream_resumed_from_a_saved_position_continues_identically(shard_world):
    plan = _plan(shard_world)
    reference = [i.sample.key for i in itertools.islice(iter_stream(plan, StreamPosition()), 70)]
    for cut in (1, 11, 12, 47, 48):
        head = list(itertools.islice(iter_stream(plan, StreamPosition()), cut))
        resumed = iter_stream(plan, head[-1].next_position)
        tail = [i.sample.key for i in itertools.islice(resumed, 70 - cut)]
        assert [i.sample.key for i in head] + tail == reference


def test_sample_split_consumers_share_a_single_shard_without_overlap(shard_world):
    urls = tuple(expand_shard_urls(shard_world.grounding_pattern))
    seen = []
    for consumer in range(3):
        plan = ConsumerPlan(urls, consumer, 3, 0, 1)
        items = itertools.islice(iter_stream(plan, StreamPosition()), 10)
        seen.append({i.sample.key for i in items if i.position.epoch == 0})
    assert set().union(*seen) == set(shard_world.grounding_keys[0])
    assert sum(len(s) for s in seen) == len(shard_world.grounding_keys[0])


def test_truncated_shard_is_logged_and_the_stream_moves_on(shard_world, tmp_path, caplog):
    good = shard_world.root / "text-00000.tar"
    broken = tmp_path / "broken.tar"
    with tarfile.open(good) as archive:
        cut_member = archive.getmembers()[10]  # cut the tar in the middle of this file's data
    broken.write_bytes(good.read_bytes()[: cut_member.offset_data + cut_member.size // 2])
    plan = ConsumerPlan((str(broken), str(good)), 0, 1, seed=0, stream_id=0)
    with caplog.at_level(logging.ERROR):
        keys = [i.sample.key for i in itertools.islice(iter_stream(plan, StreamPosition()), 20)]
    assert set(shard_world.text_keys[0]) <= set(keys)
    assert "broken.tar" in caplog.text


def test_stream_with_no_readable_shard_raises_instead_of_spinning(tmp_path):
    empty = tmp_path / "junk.tar"
    empty.write_bytes(b"not a tar at all" * 10)
    with pytest.raises(ShardReadError, match="junk.tar"):
        next(iter_stream(ConsumerPlan((str(empty),), 0, 1, 0, 0), StreamPosition()))
