"""The download plan: every URL of a host in one shard, so politeness holds for the whole cluster.

Two passes through the runner, each resumable; no process ever holds every URL:

1. `download_partition`, one task per input file: each row goes to bucket hash(host) mod B
   (B = `--plan-buckets`), written to POOL/_plan/partitions/BUCKET/FILE.parquet. A file that
   cannot be read (a broken Parquet footer, a missing column) fails its task alone: it is reported
   in POOL/_errors/download_partition/ with its path and the cause, and the rest is planned and
   downloaded. The readable inputs are then fixed (POOL/_plan/readable_inputs.json): a re-run
   retries the unreadable ones, and if one reads now, it refuses (that file needs a new pool, as
   planning it would move rows between shards that may be downloaded already).
2. `download_plan`, one task per bucket: the bucket's rows sorted by (host, url, uid); a host with
   n rows is cut into k = ceil(n / samples_per_shard) sub-partitions of near-equal, contiguous
   runs; the sub-partitions are packed in that order into shards of at most samples_per_shard
   rows, never two of one host in a shard. Written to POOL/_plan/shards/BUCKET.parquet, one row
   group per shard, each row with its host and the host's k.

The driver numbers the shards bucket by bucket (00000, 00001, ...); each is downloaded under its
own gate, which gives each host it holds 1/k of the per-host limits
(`curation.download.politeness`), by a task of its own or shared with a few other shards whose
hosts have few connection slots (`curation.stages.download.group_shards`; pass 2 records each
shard's split hosts for that). Memory: pass 1 holds one input file, pass 2 one bucket (about
rows / B), the driver one count per bucket and one small record per shard. The plan's settings are saved in POOL/_download_plan.json; a re-run with other inputs or
settings fails fast instead of mixing two pools.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.download.shard_download import host_of
from curation.runner import ShardContext, ShardTask, marker_url, stable_bucket
from curation.stats import stats_dir

PLAN_FILE = "_download_plan.json"
PLAN_DIR = "_plan"
PARTITION_STAGE = "download_partition"
PLAN_STAGE = "download_plan"
MAX_SAMPLES_PER_SHARD = 10_000  # keys are shard id + a 4-digit index
DEFAULT_PLAN_BUCKETS = 16
REQUIRED_COLUMNS = ("uid", "url", "text")
# Carried into the pool sidecars when an input has them (extract's `lang`: the page's declared
# `<html lang>`, else detected); null where it has not. langmix reads it.
OPTIONAL_COLUMNS = ("texts", "lang")

PLAN_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("texts", pa.list_(pa.string())),
        ("lang", pa.string()),
        ("host", pa.string()),
        ("host_parts", pa.int32()),  # k: the sub-partitions the host was split into
    ]
)


def host_key(url: str) -> str:
    """The host a URL's requests go to ("" when the URL has none: it fails without a request)."""
    return host_of(url) or ""


def input_files(patterns: list[str] | tuple[str, ...]) -> list[str]:
    """Expand folders (their *.parquet files) and globs into a sorted, de-duplicated list."""
    urls: list[str] = []
    for pattern in patterns:
        fs, path = fsio.filesystem(pattern)
        if not any(ch in pattern for ch in "*?[{") and fs.isdir(path):
            urls.extend(fsio.expand(fsio.join(pattern, "*.parquet")))
        else:
            urls.extend(fsio.expand(pattern))
    return sorted(set(urls))


@dataclass(frozen=True)
class PlanSettings:
    inputs: tuple[str, ...]  # file URLs, sorted
    samples_per_shard: int
    buckets: int

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": list(self.inputs),
            "samples_per_shard": self.samples_per_shard,
            "plan_buckets": self.buckets,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> PlanSettings:
        return cls(
            tuple(record["inputs"]), int(record["samples_per_shard"]), int(record["plan_buckets"])
        )


def save_or_check_plan(pool: str, settings: PlanSettings) -> None:
    """Record the plan of a new pool; refuse to continue a pool planned from other inputs."""
    fsio.check_plan(fsio.join(pool, PLAN_FILE), settings.to_json(), f"the pool {pool}")


def load_plan(pool: str) -> PlanSettings | None:
    url = fsio.join(pool, PLAN_FILE)
    return PlanSettings.from_json(fsio.read_json(url, expect=dict)) if fsio.exists(url) else None


def partition_tasks(settings: PlanSettings) -> list[ShardTask]:
    return [ShardTask(f"{index:05d}", (url,)) for index, url in enumerate(settings.inputs)]


def read_candidates(url: str) -> pa.Table:
    """The columns the pool needs from one input file; a ValueError names the file and cause."""
    fs, path = fsio.filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            missing = [column for column in REQUIRED_COLUMNS if column not in names]
            if missing:
                raise ValueError(
                    f"{url}: not a candidate table, missing column(s) {', '.join(missing)}"
                )
            table = parquet.read(
                columns=[c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in names]
            )
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{url}: cannot read as Parquet: {exc}") from None
    texts = (
        table.column("texts").to_pylist()
        if "texts" in table.column_names
        else [None] * table.num_rows
    )
    fallback = table.column("text").to_pylist()
    return pa.table(
        {
            "uid": table.column("uid").cast(pa.string()),
            "url": table.column("url").cast(pa.string()),
            "text": table.column("text").cast(pa.string()),
            "texts": pa.array(
                [list(t) if t else [f] for t, f in zip(texts, fallback)], pa.list_(pa.string())
            ),
            "lang": table.column("lang").cast(pa.string())
            if "lang" in table.column_names
            else pa.nulls(table.num_rows, pa.string()),
        }
    )


@dataclass(frozen=True)
class PartitionByHost:
    """Pass 1: split one input file into per-bucket files by a hash of each row's host."""

    buckets: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        (url,) = task.inputs
        table = read_candidates(url)
        hosts = [host_key(u) for u in table.column("url").to_pylist()]
        table = table.append_column("host", pa.array(hosts, pa.string()))
        ctx.stats.rows_in = ctx.stats.rows_out = table.num_rows
        by_bucket: dict[int, list[int]] = {}
        for row, host in enumerate(hosts):
            by_bucket.setdefault(stable_bucket(host, self.buckets), []).append(row)
        for bucket, rows in sorted(by_bucket.items()):
            ctx.write_parquet(
                posixpath.join(PLAN_DIR, "partitions", f"{bucket:05d}", f"{task.shard_id}.parquet"),
                table.take(pa.array(rows, pa.int64())),
            )


def bucket_tasks(pool: str) -> list[ShardTask]:
    """The reduce between the passes: each bucket's partition files, from pass 1's records."""
    by_bucket: dict[str, list[str]] = {}
    for record_url in fsio.expand(fsio.join(stats_dir(pool, PARTITION_STAGE), "*.json")):
        for output in fsio.read_json(record_url, expect=dict)["outputs"]:
            bucket = output.split("/")[2]
            by_bucket.setdefault(bucket, []).append(fsio.join(pool, output))
    return [ShardTask(bucket, tuple(sorted(files))) for bucket, files in sorted(by_bucket.items())]


def pack_hosts(hosts: list[str], samples_per_shard: int) -> tuple[list[int], list[int]]:
    """For rows sorted by host: each row's shard within the bucket, and its host's k."""
    shard_of: list[int] = []
    parts_of: list[int] = []
    shard, filled = -1, samples_per_shard  # no shard open yet
    start = 0
    while start < len(hosts):
        end = start
        while end < len(hosts) and hosts[end] == hosts[start]:
            end += 1
        count = end - start
        parts = math.ceil(count / samples_per_shard)
        for part in range(parts):
            size = count // parts + (part < count % parts)
            if filled + size > samples_per_shard or part > 0:
                shard, filled = shard + 1, 0  # a sub-partition never shares a shard with another
            shard_of.extend([shard] * size)
            parts_of.extend([parts] * size)
            filled += size
        start = end
    return shard_of, parts_of


def shard_host_parts(
    hosts: list[str], shard_of: list[int], parts_of: list[int], shards: int
) -> list[list[list[int]]]:
    """Per shard, [k, hosts] pairs: how many of its hosts were split into k sub-partitions (the
    download driver sizes its tasks by the connection slots these give, without reading rows)."""
    seen: set[tuple[int, str]] = set()
    counts: list[dict[int, int]] = [{} for _ in range(shards)]
    for host, shard, parts in zip(hosts, shard_of, parts_of):
        if (shard, host) not in seen:
            seen.add((shard, host))
            counts[shard][parts] = counts[shard].get(parts, 0) + 1
    return [[[k, n] for k, n in sorted(count.items())] for count in counts]


@dataclass(frozen=True)
class PlanShards:
    """Pass 2: one bucket's rows -> shards whose hosts no other shard holds (giant hosts split)."""

    samples_per_shard: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        parts = [fsio.read_parquet(url) for url in task.inputs]
        table = pa.concat_tables(parts).sort_by(
            [("host", "ascending"), ("url", "ascending"), ("uid", "ascending")]
        )
        shard_of, parts_of = pack_hosts(table.column("host").to_pylist(), self.samples_per_shard)
        table = table.append_column("host_parts", pa.array(parts_of, pa.int32()))
        table = table.select(PLAN_SCHEMA.names).cast(PLAN_SCHEMA)
        shards = (shard_of[-1] + 1) if shard_of else 0
        with ctx.open_output(posixpath.join(PLAN_DIR, "shards", f"{task.shard_id}.parquet")) as out:
            with pq.ParquetWriter(out, PLAN_SCHEMA, compression="zstd") as writer:
                start = 0
                for shard in range(shards):
                    end = start
                    while end < len(shard_of) and shard_of[end] == shard:
                        end += 1
                    writer.write_table(table.slice(start, end - start), row_group_size=end - start)
                    start = end
        hosts = table.column("host").to_pylist()
        ctx.stats.rows_in = ctx.stats.rows_out = table.num_rows
        ctx.stats.extra.update(
            {
                "shards": shards,
                "hosts": len(set(hosts)),
                "split_hosts": len({h for h, k in zip(hosts, parts_of) if k > 1}),
                "shard_host_parts": shard_host_parts(hosts, shard_of, parts_of, shards),
            }
        )


@dataclass(frozen=True)
class ShardSource:
    """Where a download shard's rows are: one row group of one bucket's plan file; and how many
    of its hosts were split k ways, as (k, hosts) pairs (empty: not recorded, an older plan)."""

    plan_file: str
    row_group: int
    host_parts: tuple[tuple[int, int], ...] = ()

    def connection_slots(self, connections: int) -> int | None:
        """Requests the shard may have in flight at once (None when the plan did not record it):
        each host's `politeness.HostGate.connections_for`, summed."""
        if not self.host_parts:
            return None
        return sum(hosts * max(1, connections // k) for k, hosts in self.host_parts)


def numbered_shards(pool: str, buckets: list[str]) -> dict[str, ShardSource]:
    """Global shard ids, bucket by bucket, from each bucket's pass-2 record."""
    sources: dict[str, ShardSource] = {}
    for bucket in buckets:
        extra = fsio.read_json(marker_url(pool, PLAN_STAGE, bucket), expect=dict)["extra"]
        plan_file = fsio.join(pool, PLAN_DIR, "shards", f"{bucket}.parquet")
        parts = extra.get("shard_host_parts") or [[] for _ in range(int(extra["shards"]))]
        for row_group, shard_parts in enumerate(parts):
            sources[f"{len(sources):05d}"] = ShardSource(
                plan_file, row_group, tuple((int(k), int(n)) for k, n in shard_parts)
            )
    return sources


def read_shard_rows(source: ShardSource) -> pa.Table:
    fs, path = fsio.filesystem(source.plan_file)
    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).read_row_group(source.row_group)
