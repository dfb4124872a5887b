"""Cut the deduplicated candidate rows into pool shards, deterministically and without reading them.

Only the Parquet footers are read: input files are taken in sorted order, their rows numbered
globally, and pool shard k holds rows [k * N, (k + 1) * N). The plan is saved beside the pool so a
re-run (or `--retry-failed`) maps every shard to the same rows, and a re-run with different inputs
fails fast instead of mixing two pools.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio

PLAN_FILE = "_download_plan.json"
MAX_SAMPLES_PER_SHARD = 10_000  # keys are shard id + a 4-digit index
REQUIRED_COLUMNS = ("uid", "url", "text")


@dataclass(frozen=True)
class InputSlice:
    url: str
    start: int
    stop: int


@dataclass(frozen=True)
class DownloadPlan:
    inputs: tuple[tuple[str, int], ...]  # (file URL, row count), sorted by URL
    samples_per_shard: int

    def shards(self) -> dict[str, tuple[InputSlice, ...]]:
        shards: dict[int, list[InputSlice]] = {}
        offset = 0
        for url, rows in self.inputs:
            position = 0
            while position < rows:
                shard, within = divmod(offset + position, self.samples_per_shard)
                take = min(rows - position, self.samples_per_shard - within)
                shards.setdefault(shard, []).append(InputSlice(url, position, position + take))
                position += take
            offset += rows
        return {f"{index:05d}": tuple(slices) for index, slices in sorted(shards.items())}

    def to_json(self) -> dict:
        return {
            "samples_per_shard": self.samples_per_shard,
            "inputs": [{"url": url, "rows": rows} for url, rows in self.inputs],
        }

    @classmethod
    def from_json(cls, record: dict) -> DownloadPlan:
        return cls(
            tuple((item["url"], int(item["rows"])) for item in record["inputs"]),
            int(record["samples_per_shard"]),
        )


def input_files(patterns: list[str]) -> list[str]:
    """Expand folders (their *.parquet files) and globs into a sorted, de-duplicated list."""
    urls: list[str] = []
    for pattern in patterns:
        if not any(ch in pattern for ch in "*?[{") and fsio.filesystem(pattern)[0].isdir(
            fsio.filesystem(pattern)[1]
        ):
            urls.extend(fsio.expand(fsio.join(pattern, "*.parquet")))
        else:
            urls.extend(fsio.expand(pattern))
    return sorted(set(urls))


def parquet_rows(url: str) -> int:
    fs, path = fsio.filesystem(url)
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in parquet.schema_arrow.names]
            if missing:
                raise ValueError(
                    f"{url}: not a candidate table, missing column(s) {', '.join(missing)}"
                )
            return parquet.metadata.num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{url}: cannot read as Parquet: {exc}") from None


def make_plan(patterns: list[str], samples_per_shard: int) -> DownloadPlan:
    if not 1 <= samples_per_shard <= MAX_SAMPLES_PER_SHARD:
        raise ValueError(
            f"--samples-per-shard must be in 1..{MAX_SAMPLES_PER_SHARD}, got {samples_per_shard}"
        )
    urls = input_files(patterns)
    if not urls:
        raise ValueError(f"no candidate Parquet files match {' '.join(patterns)}")
    return DownloadPlan(tuple((url, parquet_rows(url)) for url in urls), samples_per_shard)


def load_plan(pool: str) -> DownloadPlan | None:
    url = fsio.join(pool, PLAN_FILE)
    return DownloadPlan.from_json(fsio.read_json(url)) if fsio.exists(url) else None


def save_or_check_plan(pool: str, plan: DownloadPlan) -> None:
    """Record the plan of a new pool; refuse to continue a pool planned from other inputs."""
    existing = load_plan(pool)
    if existing is None:
        fsio.write_json(fsio.join(pool, PLAN_FILE), plan.to_json())
    elif existing != plan:
        raise ValueError(
            f"{pool} was planned from other inputs or --samples-per-shard "
            f"(see {PLAN_FILE}); write to a new --out or use the same inputs"
        )


def read_slice(piece: InputSlice) -> pa.Table:
    """Rows [start, stop) of one input file, reading only the row groups that hold them."""
    fs, path = fsio.filesystem(piece.url)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        columns = [c for c in (*REQUIRED_COLUMNS, "texts") if c in parquet.schema_arrow.names]
        groups, first_row, row = [], None, 0
        for index in range(parquet.metadata.num_row_groups):
            rows = parquet.metadata.row_group(index).num_rows
            if row + rows > piece.start and row < piece.stop:
                groups.append(index)
                first_row = row if first_row is None else first_row
            row += rows
        table = parquet.read_row_groups(groups, columns=columns)
    return table.slice(piece.start - (first_row or 0), piece.stop - piece.start)
