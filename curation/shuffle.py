"""A shuffle with bounded fan-in: rows travel to their destination through levels of files.

Every row carries a destination in [0, dests) (for `shards`, an output shard drawn from a seeded
hash of its uid). Destinations are numbered in base `fan` with `digits` digits; a level-k "range"
is the set of destinations that share their first k digits (a range at level >= digits is one
destination). Files live at `ROOT/LEVEL/RANGE/SOURCE.parquet`:

- level 1: one task per input source (written by the caller, e.g. a pool shard's spill) splits
  its rows by the first digit, so it writes at most `fan` files;
- level k > 1: one task per (level-(k-1) range, group of at most `fan` sources) reads those files
  and splits them by the next digit (or only merges, once the digits are used up): at most `fan`
  files in, at most `fan` files out, and group g becomes source g of level k;
- after the last level, each destination's rows lie in at most `fan` files, which its writer reads.

So no task reads or writes more than `fan` files, and no task's memory depends on the number of
sources or destinations: a task streams its inputs in row groups, and `ShuffleWriter` holds at
most about `budget_bytes` of rows (a queue and its sorted copy) before it appends each bucket's
rows to its file as a row group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.runner import ShardContext, ShardTask

DEST = "dest"
READ_BATCH_ROWS = 256


def destinations(hashes: np.ndarray, dests: int) -> np.ndarray:
    """floor(hash * dests / 2**64), exactly, in uint64 arithmetic: slice j of the hash range."""
    if not 0 < dests < 2**31:
        raise ValueError(f"dests must be in [1, 2**31), got {dests}")
    hashes = hashes.astype(np.uint64)
    n = np.uint64(dests)
    high, low = hashes >> np.uint64(32), hashes & np.uint64(0xFFFFFFFF)
    return ((high * n + ((low * n) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class ShufflePlan:
    """The levels of a shuffle from `sources` inputs to `dests` destinations, fan-in `fan`."""

    sources: int
    dests: int
    fan: int

    def __post_init__(self) -> None:
        if self.fan < 2 or self.sources < 1 or self.dests < 1:
            raise ValueError(f"bad shuffle plan {self}: fan >= 2, sources and dests >= 1")

    @property
    def digits(self) -> int:
        digits = 1
        while self.fan**digits < self.dests:
            digits += 1
        return digits

    @property
    def levels(self) -> int:
        """Levels of files: enough to use every digit and to leave <= fan files per dest."""
        level = 1
        while level < self.digits or self.sources_at(level) > self.fan:
            level += 1
        return level

    @property
    def width(self) -> int:
        return max(5, len(str(max(self.sources, self.dests) - 1)))

    def sources_at(self, level: int) -> int:
        return _ceil_div(self.sources, self.fan ** (level - 1))

    def ranges_at(self, level: int) -> int:
        return _ceil_div(self.dests, self.fan ** (self.digits - min(level, self.digits)))

    def range_of(self, dests: np.ndarray, level: int) -> np.ndarray:
        return dests // self.fan ** (self.digits - min(level, self.digits))

    def children(self, range_id: int, level: int) -> range:
        """The level-`level` ranges inside range `range_id` of level `level - 1`."""
        if level > self.digits:
            return range(range_id, range_id + 1)
        return range(range_id * self.fan, min((range_id + 1) * self.fan, self.ranges_at(level)))

    def file_name(self, level: int, range_id: int, source: int) -> str:
        return f"{level}/{range_id:0{self.width}d}/{source:0{self.width}d}.parquet"

    def files(self, root: str, level: int, range_id: int, sources: range) -> list[str]:
        return [fsio.join(root, self.file_name(level, range_id, s)) for s in sources]

    def pattern(self, root: str, level: int, range_id: int, sources: range) -> str:
        """The files `files` names, as one brace pattern (for reports)."""
        first, last = sources[0], sources[-1]
        name = self.file_name(level, range_id, first)
        if last != first:
            name = (
                name.rsplit("/", 1)[0]
                + f"/{{{first:0{self.width}d}..{last:0{self.width}d}}}.parquet"
            )
        return fsio.join(root, name)

    def groups(self, level: int) -> list[range]:
        """The groups of level-(level-1) sources that the level-`level` tasks merge."""
        count = self.sources_at(level - 1)
        return [range(g, min(g + self.fan, count)) for g in range(0, count, self.fan)]

    def final_sources(self) -> range:
        return range(self.sources_at(self.levels))

    def to_record(self) -> dict[str, int]:
        return {
            "sources": self.sources,
            "dests": self.dests,
            "fan": self.fan,
            "digits": self.digits,
            "levels": self.levels,
        }


class ShuffleWriter:
    """Rows routed to up to `fan` output files, holding at most about `budget_bytes` of rows.

    `add(table)` queues a table; once the queue holds half the budget, it is split by
    `bucket_of(table)` (an int per row, each a key of `names`) in one sort (`take`), and each
    bucket's rows are appended to its file as one row group. So the queue and its sorted copy are
    the only rows held, never one small buffer per bucket (those fragment the allocator: with a
    buffer per bucket a 128 MB budget peaked at about 4x the budget in RSS). `close()` writes the
    rest, and an empty file (with the schema) for every bucket that got no row, so a reader can
    tell "no rows" from "file lost". Files commit atomically through `ctx`.
    """

    def __init__(
        self,
        ctx: ShardContext,
        names: dict[int, str],
        schema: pa.Schema,
        bucket_of: Callable[[pa.Table], np.ndarray],
        budget_bytes: int,
    ):
        self.ctx, self.names, self.schema = ctx, names, schema
        self.bucket_of, self.budget_bytes = bucket_of, budget_bytes
        self.queue: list[pa.Table] = []
        self.queued = 0
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.files = contextlib.ExitStack()
        self.rows_out = 0

    def __enter__(self) -> ShuffleWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self._flush()
            for bucket in self.names:
                self._writer(bucket).close()
        else:  # the temporaries are discarded; close the writers while their files are open
            for writer in self.writers.values():
                with contextlib.suppress(Exception):
                    writer.close()
        self.files.__exit__(exc_type, *rest)

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.queue.append(table.select(self.schema.names).cast(self.schema))
        self.queued += table.nbytes
        self.rows_out += table.num_rows
        if self.queued >= self.budget_bytes // 2:
            self._flush()

    def _writer(self, bucket: int) -> pq.ParquetWriter:
        if bucket not in self.writers:
            handle = self.files.enter_context(self.ctx.open_output(self.names[bucket]))
            self.writers[bucket] = pq.ParquetWriter(handle, self.schema, compression="none")
        return self.writers[bucket]

    def _flush(self) -> None:
        if not self.queue:
            return
        # One contiguous copy, and the queue let go, before the sort's copy: the peak is the
        # queue plus one copy, not the queue plus `take`'s own concatenation plus its result.
        table = pa.concat_tables(self.queue).combine_chunks()
        self.queue, self.queued = [], 0
        buckets = self.bucket_of(table)
        names = sorted(self.names)
        unknown = set(np.unique(buckets).tolist()) - set(names)
        if unknown:
            raise ValueError(
                f"rows routed to buckets {sorted(unknown)[:5]}, not this task's outputs"
            )
        order = np.argsort(buckets, kind="stable")
        table = table.take(pa.array(order))  # the rows grouped by bucket, in arrival order within
        starts = np.searchsorted(buckets[order], names, side="left").tolist()
        ends = np.searchsorted(buckets[order], names, side="right").tolist()
        for bucket, lo, hi in zip(names, starts, ends):
            if hi > lo:
                self._writer(bucket).write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
        del table
        # Hand the freed rows back to the OS: the allocator otherwise keeps them (RSS at about
        # twice the budget), and a Ray worker's RSS is what the cluster's memory monitor kills on.
        pa.default_memory_pool().release_unused()


def iter_batches(urls: Sequence[str], columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of `urls`, file after file, in small record batches (one file open at a time)."""
    for url in urls:
        fs, path = fsio.filesystem(url)
        with fs.open(path, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(READ_BATCH_ROWS, columns=columns):
                yield pa.Table.from_batches([batch])


def check_inputs(urls: Sequence[str]) -> None:
    missing = [url for url in urls if not fsio.exists(url)]
    if missing:
        raise FileNotFoundError(f"shuffle files missing (re-run from a fresh --out): {missing[:3]}")


@dataclass(frozen=True)
class ShuffleLevel:
    """One task of level `level` > 1: merge a group of level-(level-1) files of one range, split
    them by the next digit. Task ids are `RANGE-GROUP` (see `level_tasks`)."""

    root: str  # the shuffle folder, relative to the stage's out_dir
    plan: ShufflePlan
    level: int
    schema: pa.Schema
    budget_bytes: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        range_id, group = (int(part) for part in task.shard_id.split("-"))
        sources = self.plan.groups(self.level)[group]
        urls = self.plan.files(fsio.join(ctx.out_dir, self.root), self.level - 1, range_id, sources)
        check_inputs(urls)
        names = {
            child: fsio.join(self.root, self.plan.file_name(self.level, child, group))
            for child in self.plan.children(range_id, self.level)
        }

        def bucket_of(table: pa.Table) -> np.ndarray:
            return self.plan.range_of(table[DEST].to_numpy(), self.level)

        with ShuffleWriter(ctx, names, self.schema, bucket_of, self.budget_bytes) as writer:
            for table in iter_batches(urls):
                ctx.stats.rows_in += table.num_rows
                writer.add(table)
        ctx.stats.rows_out = writer.rows_out
        ctx.stats.extra.update(files_read=len(urls), files_written=len(names))


def level_tasks(plan: ShufflePlan, root_url: str, level: int) -> list[ShardTask]:
    return [
        ShardTask(
            f"{range_id:0{plan.width}d}-{group:0{plan.width}d}",
            (plan.pattern(root_url, level - 1, range_id, sources),),
        )
        for range_id in range(plan.ranges_at(level - 1))
        for group, sources in enumerate(plan.groups(level))
    ]
