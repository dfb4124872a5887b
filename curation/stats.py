"""Per-shard statistics: counts in and out, drops by reason, errors by kind, timings.

Every stage writes one record per shard to `OUT/_stats/STAGE/SHARD.json`; that file is also the
shard's done marker. The dashboard and `python -m curation stats` read only these files.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curation import fsio

MAX_ERROR_EXAMPLES = 20


@dataclass
class ShardStats:
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    drops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_examples: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] += n

    def error(self, kind: str, where: str, message: str) -> None:
        """Count a bad input record and keep a few examples naming where it was and why."""
        self.errors[kind] += 1
        if len(self.error_examples) < MAX_ERROR_EXAMPLES:
            self.error_examples.append({"kind": kind, "where": where, "message": message[:500]})

    @contextlib.contextmanager
    def timer(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def to_record(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "bytes_in": self.bytes_in,
            "drops": dict(self.drops),
            "errors": dict(self.errors),
            "error_examples": self.error_examples,
            "timings": self.timings,
            "extra": self.extra,
        }


def stats_dir(out_dir: str, stage: str) -> str:
    return fsio.join(out_dir, "_stats", stage)


def read_stage_records(out_dir: str, stage: str | None = None) -> list[dict[str, Any]]:
    """All shard records under `out_dir` (every stage, or one), each with the output folder it
    belongs to ("folder", relative to `out_dir`; "" for `out_dir` itself) and a display "label":
    the stage name, or "stage (folder)" for all but the latest run when one stage ran into several
    folders (a run that scores its pool twice keeps the two apart)."""
    fs, path = fsio.filesystem(out_dir)
    root = path.rstrip("/")
    pattern = f"{root}/**/_stats/{stage or '*'}/*.json"
    files = sorted(set(fs.glob(pattern)) | set(fs.glob(f"{root}/_stats/{stage or '*'}/*.json")))
    records = []
    for file in files:
        record = fsio.read_json(_with_protocol(out_dir, file), expect=dict)
        folder = file[: file.rindex("/_stats/")]
        record["folder"] = folder[len(root) :].strip("/") if folder.startswith(root) else folder
        records.append(record)
    return label_stages(records)


def label_stages(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first_start: dict[tuple[str, str], float] = {}
    for record in records:
        key = (record["stage"], record.get("folder", ""))
        start = record.get("started_at") or 0.0
        first_start[key] = min(first_start.get(key, start), start)
    latest: dict[str, tuple[float, str]] = {}
    for (stage, folder), start in first_start.items():
        if stage not in latest or (start, folder) > latest[stage]:
            latest[stage] = (start, folder)
    for record in records:
        stage, folder = record["stage"], record.get("folder", "")
        record["label"] = stage if latest[stage][1] == folder else f"{stage} ({folder or '.'})"
    return records


def _with_protocol(reference_url: str, path: str) -> str:
    return reference_url.split("://", 1)[0] + "://" + path if "://" in reference_url else path


def summarize(records: list[dict[str, Any]]) -> pa.Table:
    """One row per stage: shards, rows in/out, drops and errors by reason, wall time, throughput."""
    by_stage: dict[str, dict[str, Any]] = {}
    for record in records:
        row = by_stage.setdefault(
            record.get("label") or record["stage"],
            {
                "shards": 0,
                "rows_in": 0,
                "rows_out": 0,
                "bytes_in": 0,
                "drops": Counter(),
                "errors": Counter(),
                "task_seconds": 0.0,
                "first_start": None,
                "last_end": None,
            },
        )
        row["shards"] += 1
        for key in ("rows_in", "rows_out", "bytes_in"):
            row[key] += record.get(key, 0)
        row["drops"].update(record.get("drops", {}))
        row["errors"].update(record.get("errors", {}))
        row["task_seconds"] += record.get("wall_seconds", 0.0)
        start, end = record.get("started_at"), record.get("finished_at")
        if start is not None:
            row["first_start"] = (
                start if row["first_start"] is None else min(row["first_start"], start)
            )
        if end is not None:
            row["last_end"] = end if row["last_end"] is None else max(row["last_end"], end)
    columns: dict[str, list[Any]] = {
        k: []
        for k in (
            "stage",
            "shards",
            "rows_in",
            "rows_out",
            "bytes_in",
            "drops",
            "errors",
            "task_seconds",
            "wall_seconds",
            "rows_per_task_second",
        )
    }
    for stage, row in by_stage.items():
        wall = (row["last_end"] - row["first_start"]) if row["first_start"] is not None else 0.0
        columns["stage"].append(stage)
        for key in ("shards", "rows_in", "rows_out", "bytes_in", "task_seconds"):
            columns[key].append(row[key])
        columns["drops"].append(sorted(row["drops"].items()))
        columns["errors"].append(sorted(row["errors"].items()))
        columns["wall_seconds"].append(wall)
        columns["rows_per_task_second"].append(
            row["rows_in"] / row["task_seconds"] if row["task_seconds"] else 0.0
        )
    pair_list = pa.list_(pa.struct([("key", pa.string()), ("count", pa.int64())]))
    schema = pa.schema(
        [
            ("stage", pa.string()),
            ("shards", pa.int64()),
            ("rows_in", pa.int64()),
            ("rows_out", pa.int64()),
            ("bytes_in", pa.int64()),
            ("drops", pair_list),
            ("errors", pair_list),
            ("task_seconds", pa.float64()),
            ("wall_seconds", pa.float64()),
            ("rows_per_task_second", pa.float64()),
        ]
    )
    for key in ("drops", "errors"):
        columns[key] = [[{"key": k, "count": v} for k, v in pairs] for pairs in columns[key]]
    return pa.table(columns, schema=schema)


def format_summary(table: pa.Table) -> str:
    rows = table.to_pylist()
    width = max([14] + [len(row["stage"]) + 1 for row in rows])
    lines = [f"{'stage':<{width}}{'shards':>7}{'in':>10}{'out':>10}{'wall s':>9}  drops / errors"]
    for row in rows:
        drops = ", ".join(f"{d['key']}={d['count']}" for d in row["drops"])
        errors = ", ".join(f"{e['key']}={e['count']}" for e in row["errors"])
        detail = "; ".join(part for part in (drops, errors and f"errors: {errors}") if part)
        lines.append(
            f"{row['stage']:<{width}}{row['shards']:>7}{row['rows_in']:>10}{row['rows_out']:>10}"
            f"{row['wall_seconds']:>9.1f}  {detail}"
        )
    return "\n".join(lines)
