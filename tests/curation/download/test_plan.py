"""The download plan: hosts partitioned into shards by a hash, giant hosts split into k shards."""

import hashlib
import math
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import fsio
from curation.download.plan import (
    PARTITION_STAGE,
    PLAN_STAGE,
    PartitionByHost,
    PlanSettings,
    PlanShards,
    ShardSource,
    bucket_tasks,
    input_files,
    numbered_shards,
    pack_hosts,
    partition_tasks,
    read_shard_rows,
    save_or_check_plan,
)
from curation.download.politeness import HostGate, HostLimits
from curation.runner import run_stage


def write_candidates(path, urls: list[str], with_texts: bool = True) -> str:
    columns = {
        "uid": [hashlib.md5(u.encode()).hexdigest() for u in urls],
        "url": urls,
        "text": [f"caption of {u}" for u in urls],
    }
    if with_texts:
        columns["texts"] = [[f"caption of {u}", "another"] for u in urls]
    pq.write_table(pa.table(columns), path)
    return str(path)


def plan(pool, files: list[str], samples_per_shard: int, buckets: int) -> dict[str, list[dict]]:
    """Both planning passes in this process; shard id -> its rows."""
    settings = PlanSettings(tuple(input_files(files)), samples_per_shard, buckets)
    options = {"use_ray": False, "progress": False}
    run_stage(PARTITION_STAGE, PartitionByHost(buckets), partition_tasks(settings), pool, **options)
    tasks = bucket_tasks(pool)
    assert run_stage(PLAN_STAGE, PlanShards(samples_per_shard), tasks, pool, **options).ok
    sources = numbered_shards(pool, [task.shard_id for task in tasks])
    return {shard: read_shard_rows(source).to_pylist() for shard, source in sources.items()}


def test_every_host_is_in_one_shard_and_a_giant_host_in_k_shards(tmp_path):
    hosts = {f"h{i}.example": 3 + i for i in range(8)}  # 3..10 URLs each
    hosts["cdn.example"] = 23  # a giant host at 5 samples per shard: k = ceil(23 / 5) = 5
    urls = [f"http://{host}/{n}.jpg" for host, count in hosts.items() for n in range(count)]
    half = len(urls) // 2
    files = [
        write_candidates(tmp_path / "a.parquet", urls[:half]),
        write_candidates(tmp_path / "b.parquet", urls[half:], with_texts=False),
    ]
    shards = plan(str(tmp_path / "pool"), files, samples_per_shard=5, buckets=3)

    rows = [row for shard_rows in shards.values() for row in shard_rows]
    assert sorted(row["url"] for row in rows) == sorted(urls)  # every row once
    assert list(shards) == [f"{i:05d}" for i in range(len(shards))]
    shards_of: dict[str, set[str]] = {}
    for shard, shard_rows in shards.items():
        assert 1 <= len(shard_rows) <= 5
        for row in shard_rows:
            shards_of.setdefault(row["host"], set()).add(shard)
            assert row["texts"][0] == row["text"]
        # never two sub-partitions of one host in a shard
        split = Counter(row["host"] for row in shard_rows if row["host_parts"] > 1)
        assert all(count <= math.ceil(23 / 5) for count in split.values())
    for host, count in hosts.items():
        parts = math.ceil(count / 5)
        assert len(shards_of[host]) == parts, host
        assert {row["host_parts"] for row in rows if row["host"] == host} == {parts}
    cdn_sizes = sorted(
        sum(row["host"] == "cdn.example" for row in shard_rows) for shard_rows in shards.values()
    )
    assert [size for size in cdn_sizes if size] == [4, 4, 5, 5, 5]  # near-equal runs


def test_the_plan_does_not_depend_on_how_rows_are_spread_over_files(tmp_path):
    urls = [f"http://h{i % 4}.example/{i}.jpg" for i in range(30)]
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first = [
        write_candidates(tmp_path / "x" / "1.parquet", urls[:10]),
        write_candidates(tmp_path / "x" / "2.parquet", urls[10:]),
    ]
    second = [
        write_candidates(tmp_path / "y" / "1.parquet", urls[20:]),
        write_candidates(tmp_path / "y" / "2.parquet", urls[:20]),
    ]
    plan_x = plan(str(tmp_path / "pool-x"), first, 4, 2)
    plan_y = plan(str(tmp_path / "pool-y"), second, 4, 2)
    assert {k: [r["url"] for r in v] for k, v in plan_x.items()} == {
        k: [r["url"] for r in v] for k, v in plan_y.items()
    }


@pytest.mark.parametrize(
    "hosts, samples, shards, parts",
    [
        (["a"] * 3 + ["b"] * 2, 5, [0, 0, 0, 0, 0], [1] * 5),
        (["a"] * 3 + ["b"] * 3, 5, [0, 0, 0, 1, 1, 1], [1] * 6),
        (["a"] * 7, 3, [0, 0, 0, 1, 1, 2, 2], [3] * 7),
        (["a"] * 4 + ["b"], 3, [0, 0, 1, 1, 1], [2, 2, 2, 2, 1]),
    ],
)
def test_pack_hosts(hosts, samples, shards, parts):
    assert pack_hosts(hosts, samples) == (shards, parts)


def test_a_pool_refuses_a_plan_from_other_inputs(tmp_path):
    pool = str(tmp_path / "pool")
    save_or_check_plan(pool, PlanSettings(("a.parquet",), 4, 2))
    save_or_check_plan(pool, PlanSettings(("a.parquet",), 4, 2))  # the same plan: fine
    with pytest.raises(fsio.PlanMismatchError, match="other inputs"):
        save_or_check_plan(pool, PlanSettings(("a.parquet",), 5, 2))
    with pytest.raises(fsio.PlanMismatchError, match="other inputs"):
        save_or_check_plan(pool, PlanSettings(("a.parquet", "b.parquet"), 4, 2))


def test_an_unreadable_input_is_reported_with_its_path_and_the_rest_is_planned(tmp_path):
    good = write_candidates(tmp_path / "a.parquet", [f"http://h/{i}.jpg" for i in range(6)])
    broken = tmp_path / "b.parquet"
    write_candidates(broken, ["http://h/x.jpg"])
    broken.write_bytes(broken.read_bytes()[:-12])  # the footer is cut off
    pq.write_table(pa.table({"link": ["http://h/y.jpg"]}), tmp_path / "c.parquet")
    pool = tmp_path / "pool"
    shards = plan(str(pool), [str(tmp_path)], samples_per_shard=10, buckets=2)
    assert sorted(row["url"] for rows in shards.values() for row in rows) == sorted(
        pq.read_table(good)["url"].to_pylist()
    )
    errors = {
        record["inputs"][0]: record["message"]
        for record in (
            fsio.read_json(str(p)) for p in (pool / "_errors" / PARTITION_STAGE).glob("*.json")
        )
    }
    assert set(errors) == {str(broken), str(tmp_path / "c.parquet")}
    assert "cannot read as Parquet" in errors[str(broken)]
    assert "missing column(s) uid, url, text" in errors[str(tmp_path / "c.parquet")]


def test_each_shard_records_the_connection_slots_its_hosts_get(tmp_path):
    """The driver sizes download tasks from the plan's records alone: per shard, how many hosts
    were split k ways; their slots are what the task's HostGate will give each host."""
    hosts = {f"h{i}.example": 2 for i in range(5)}
    hosts["cdn.example"] = 12  # k = ceil(12 / 4) = 3 sub-partitions
    urls = [f"http://{host}/{n}.jpg" for host, count in hosts.items() for n in range(count)]
    pool = str(tmp_path / "pool")
    plan(pool, [write_candidates(tmp_path / "a.parquet", urls)], samples_per_shard=4, buckets=2)
    sources = numbered_shards(pool, [task.shard_id for task in bucket_tasks(pool)])
    for source in sources.values():
        rows = read_shard_rows(source).to_pylist()
        parts = {row["host"]: row["host_parts"] for row in rows}
        assert sorted(source.host_parts) == sorted(Counter(parts.values()).items())
        gate = HostGate(HostLimits(connections=6), {h: k for h, k in parts.items() if k > 1})
        assert source.connection_slots(6) == sum(gate.connections_for(h) for h in parts)
    assert sum(source.connection_slots(6) for source in sources.values()) == 5 * 6 + 3 * 2
    assert ShardSource("old.parquet", 0).connection_slots(6) is None  # a plan from before
