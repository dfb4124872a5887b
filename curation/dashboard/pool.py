"""Column-projected access to the pool's sidecars and the curation columns keyed by uid.

The pool is `POOL/{shard}.parquet` (one row per input URL) plus `POOL/curation/STAGE/{shard}.parquet`
(one row per uid, same shard ids). Every aggregate the dashboard shows is a map over shards that
reads only the columns it needs, run on a few threads (pyarrow releases the GIL while decoding).

A file that cannot be read (a broken Parquet footer, a truncated upload) does not fail a page: its
shard is left out of that page's numbers and listed, with the file and the cause, in
`PoolTable.unreadable()`, which every page shows.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import fsio
from curation.dashboard.layout import RunLayout

T = TypeVar("T")
# What a damaged or vanished file raises from pyarrow or fsspec.
READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)


class UnreadableFileError(Exception):
    """One of the run's files could not be read; names the file and the cause."""

    def __init__(self, url: str, cause: BaseException):
        super().__init__(f"{url}: {type(cause).__name__}: {cause}")
        self.url = url
        self.cause = f"{type(cause).__name__}: {cause}"


class Memo:
    """Compute each keyed value once, even when several requests ask for it at the same time."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._values:
            return self._values[key]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = compute()
        return self._values[key]


class PoolTable:
    """The pool of one run: its shard ids and projected reads of sidecar and curation files."""

    def __init__(self, layout: RunLayout, threads: int | None = None):
        self.layout = layout
        self.threads = threads or min(8, (os.cpu_count() or 2) + 2)
        self.memo = Memo()
        self._unreadable: dict[str, dict[str, str]] = {}  # by file URL
        self._unreadable_lock = threading.Lock()

    def note_unreadable(self, shard: str, error: UnreadableFileError) -> None:
        with self._unreadable_lock:
            self._unreadable.setdefault(
                error.url, {"shard": shard, "file": error.url, "error": error.cause}
            )

    def unreadable(self) -> list[dict[str, str]]:
        """The files found unreadable so far (shard, file, cause), in shard order."""
        with self._unreadable_lock:
            return sorted(self._unreadable.values(), key=lambda u: (u["shard"], u["file"]))

    @cached_property
    def shards(self) -> list[str]:
        return self._shards_in(self.layout.pool)

    def stage_shards(self, stage: str) -> list[str]:
        return self.memo.get(
            ("stage_shards", stage), lambda: self._shards_in(self.layout.curation(stage))
        )

    def has_stage(self, stage: str) -> bool:
        return bool(self.stage_shards(stage))

    @staticmethod
    def _shards_in(folder: str) -> list[str]:
        fs, path = fsio.filesystem(folder)
        if not fs.exists(path):
            return []
        names = (posixpath.basename(p) for p in fs.ls(path, detail=False))
        # entry_counts.parquet and other summaries sit beside the shards; shard ids are digits.
        return sorted(
            n[: -len(".parquet")]
            for n in names
            if n.endswith(".parquet") and n[: -len(".parquet")].isdigit()
        )

    def sidecar_url(self, shard: str) -> str:
        return fsio.join(self.layout.pool, f"{shard}.parquet")

    def tar_url(self, shard: str) -> str:
        return fsio.join(self.layout.pool, f"{shard}.tar")

    def curation_url(self, stage: str, shard: str) -> str:
        return fsio.join(self.layout.curation(stage), f"{shard}.parquet")

    def schema(self, url: str) -> pa.Schema:
        fs, path = fsio.filesystem(url)
        try:
            with fs.open(path, "rb") as handle:
                return pq.read_schema(handle)
        except READ_ERRORS as exc:
            raise UnreadableFileError(url, exc) from exc

    def read(self, url: str, columns: Sequence[str], dictionary: Sequence[str] = ()) -> pa.Table:
        """Read only `columns` of one Parquet file; columns the file lacks come back as nulls.

        Columns named in `dictionary` are read dictionary-encoded (cheap to count: few distinct
        values such as status or host, counted by code instead of by string)."""
        fs, path = fsio.filesystem(url)
        try:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle, read_dictionary=list(dictionary))
                present = [c for c in columns if c in parquet.schema_arrow.names]
                table = parquet.read(columns=present)
        except READ_ERRORS as exc:
            raise UnreadableFileError(url, exc) from exc
        for name in columns:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows))
        return table.select(list(columns))

    def read_rows(self, url: str, rows: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows `rows` (ascending positions) of a Parquet file, decoding only the row groups holding them."""
        fs, path = fsio.filesystem(url)
        try:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                present = [c for c in columns if c in parquet.schema_arrow.names]
                bounds = np.cumsum(
                    [0]
                    + [
                        parquet.metadata.row_group(i).num_rows
                        for i in range(parquet.num_row_groups)
                    ]
                )
                rows = rows[rows < bounds[-1]]  # a position past the end (a stale hint): no row
                groups = sorted({int(g) for g in np.searchsorted(bounds, rows, side="right") - 1})
                table = parquet.read_row_groups(groups, columns=present)
        except READ_ERRORS as exc:
            raise UnreadableFileError(url, exc) from exc
        offsets = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in groups] or [[]])
        table = table.take(pa.array(np.searchsorted(offsets, rows), pa.int64()))
        for name in columns:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows))
        return table.select(list(columns))

    def aligned(
        self, stage: str, shard: str, pool_uids: pa.Array, columns: Sequence[str]
    ) -> tuple[pa.Table, bool]:
        """A curation stage's `columns` for the pool rows with `pool_uids` (nulls where absent),
        and whether the stage file already lists the pool's rows in the same order."""
        table = self.read(self.curation_url(stage, shard), ["uid", *columns])
        stage_uids = table.column("uid").combine_chunks()
        if stage_uids.equals(pool_uids):
            return table.select(list(columns)), True
        positions = pc.index_in(pool_uids, value_set=stage_uids)
        return table.select(list(columns)).take(positions), False

    def lookup(
        self, stage: str | None, shard: str, uids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """`columns` of the rows with these uids, from the sidecar (stage None) or a stage file.

        Only the uid column is read whole; the other columns come from the matching row groups.
        """
        url = self.sidecar_url(shard) if stage is None else self.curation_url(stage, shard)
        if not uids or not fsio.exists(url):
            return {}
        all_uids = self.read(url, ["uid"]).column("uid")
        wanted = pc.is_in(all_uids, value_set=pa.array(list(uids), pa.string()))
        rows = np.flatnonzero(pc.fill_null(wanted, False).to_numpy(zero_copy_only=False))
        if not len(rows):
            return {}
        table = self.read_rows(url, rows, ["uid", *columns])
        return {row["uid"]: row for row in table.to_pylist()}

    def _rows_by_uid(
        self, shard: str, uids: list[str], row_hints: dict[tuple[str, str], int]
    ) -> dict[str, dict[str, Any]]:
        columns = ["key", "text", "url", "status"]
        found: dict[str, dict[str, Any]] = {}
        hinted = sorted({row_hints[(shard, uid)] for uid in uids if (shard, uid) in row_hints})
        if hinted:
            table = self.read_rows(self.sidecar_url(shard), np.array(hinted), ["uid", *columns])
            wanted = set(uids)
            found = {row["uid"]: row for row in table.to_pylist() if row["uid"] in wanted}
        missing = [uid for uid in uids if uid not in found]
        if missing:
            found.update(self.lookup(None, shard, missing, columns))
        return found

    def map_shards(
        self, fn: Callable[[str], T], shards: Sequence[str] | None = None
    ) -> dict[str, T]:
        """`fn(shard)` for every shard (default: the pool's) on a thread pool, by shard in shard
        order; a shard with an unreadable file is left out and noted (see `unreadable`)."""
        shards = self.shards if shards is None else shards

        def attempt(shard: str) -> tuple[str, T | UnreadableFileError]:
            try:
                return shard, fn(shard)
            except UnreadableFileError as error:
                self.note_unreadable(shard, error)
                return shard, error

        with ThreadPoolExecutor(self.threads) as pool:
            results = list(pool.map(attempt, shards))
        return {
            shard: value for shard, value in results if not isinstance(value, UnreadableFileError)
        }

    def sample_cards(
        self,
        refs: Sequence[tuple[str, str]],
        extra: dict[tuple[str, str], dict] | None = None,
        row_hints: dict[tuple[str, str], int] | None = None,
    ) -> list[dict[str, Any]]:
        """Display records for (shard, uid) pairs: key, text, url and whether an image exists.

        `row_hints` are the samples' row positions in a curation file; stage files usually list the
        pool's rows in order, so the sidecar row at that position is tried first (checked by uid)
        before a search of the shard's uids."""
        by_shard: dict[str, list[str]] = {}
        for shard, uid in refs:
            by_shard.setdefault(shard, []).append(uid)
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for shard, uids in by_shard.items():
            try:
                found[shard] = self._rows_by_uid(shard, uids, row_hints or {})
            except UnreadableFileError as error:  # the cards show no text and no image
                self.note_unreadable(shard, error)
                found[shard] = {}
        cards = []
        for shard, uid in refs:
            row = found[shard].get(uid, {})
            cards.append(
                {
                    "shard": shard,
                    "uid": uid,
                    "key": row.get("key"),
                    "text": row.get("text"),
                    "url": row.get("url"),
                    "has_image": row.get("status") == "success",
                    **(extra or {}).get((shard, uid), {}),
                }
            )
        return cards
