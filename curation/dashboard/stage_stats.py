"""Every stage's per-shard statistics records, merged per stage for the Overview page."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from curation.stats import read_stage_records, summarize

# Pipeline order; a stage name not listed here sorts after these, by when it started.
PIPELINE_ORDER = ("extract", "dedup", "download", "balance", "score", "neardup", "shards")
MAX_ERROR_EXAMPLES = 10


class StageStats:
    """Stats records under a run folder, read once per process (restart to see stages run since)."""

    def __init__(self, root: str):
        self.root = root
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, Any]] | None = None

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if self._stages is None:
                self._stages = merge_records(read_stage_records(self.root))
            return self._stages

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.stages.get(name)


def merge_records(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage, in pipeline order: the summary row plus summed extras and error examples."""
    if not records:
        return {}
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_stage[record.get("label") or record["stage"]].append(record)
    merged = {}
    for row in summarize(records).to_pylist():
        shard_records = by_stage[row["stage"]]
        rows_in, seconds = row["rows_in"], row["wall_seconds"]
        merged[row["stage"]] = {
            **row,
            # The row is keyed by its display label ("score (pool/x)"); the step comes from the
            # stage the records name.
            "step": pipeline_step(shard_records[0]["stage"]),
            "drops": {d["key"]: d["count"] for d in row["drops"]},
            "errors": {e["key"]: e["count"] for e in row["errors"]},
            "dropped": sum(d["count"] for d in row["drops"]),
            "rows_per_second": rows_in / seconds if seconds else None,
            "started_at": min((r.get("started_at") or 0) for r in shard_records),
            "extra": merge_extras([r.get("extra") or {} for r in shard_records]),
            "timings": merge_extras([r.get("timings") or {} for r in shard_records]),
            "error_examples": [e for r in shard_records for e in r.get("error_examples", [])][
                :MAX_ERROR_EXAMPLES
            ],
        }
    return dict(
        sorted(merged.items(), key=lambda item: _order(item[1]["step"], item[1]["started_at"]))
    )


def pipeline_step(stage: str) -> str | None:
    """The pipeline step a stage belongs to ("dedup_partition" → "dedup"), or None."""
    return next(
        (
            known
            for known in PIPELINE_ORDER
            if stage == known or stage.startswith((known + "_", known + "-"))
        ),
        None,
    )


def _order(step: str | None, started_at: float) -> tuple[int, float]:
    return (PIPELINE_ORDER.index(step) if step else len(PIPELINE_ORDER)), started_at


def merge_extras(extras: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Flatten each shard's extra dict (dotted keys); per key, the sum over shards of numeric
    values and whether every shard reported the same value (a setting such as a threshold)."""
    values: dict[str, list[Any]] = defaultdict(list)
    for extra in extras:
        for key, value in _flatten(extra):
            values[key].append(value)
    merged = {}
    for key, seen in sorted(values.items()):
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)
        same = all(v == seen[0] for v in seen)
        merged[key] = {
            "sum": sum(seen) if numeric else None,
            "value": seen[0] if same else None,
            "shards": len(seen),
        }
    return merged


def _flatten(record: dict[str, Any], prefix: str = ""):
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        elif isinstance(value, (int, float, str, bool)) or value is None:
            yield name, value


# The funnel's steps: (stages that may hold the number, which number, label). The curation stages
# each judge the whole pool, so their steps say what that stage alone kept.
FUNNEL_STEPS = (
    (("extract",), "records", "WARC records read"),
    (("extract",), "rows_in", "images seen"),
    (("extract",), "rows_out", "candidate pairs"),
    (("dedup",), "rows_out", "unique image URLs"),
    (("download",), "rows_out", "downloaded"),
    (("balance",), "rows_out", "kept by MetaCLIP balancing"),
    (("score_filter", "score"), "rows_out", "kept by CLIP score"),
    (("neardup",), "rows_out", "kept by near-dup + decontamination"),
    (("shards",), "rows_out", "training samples"),
)


def funnel(stages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """From WARC records to training samples, one bar per step whose stage has run."""
    steps = []
    for candidates, number, label in FUNNEL_STEPS:
        stage = next((stages[name] for name in candidates if name in stages), None)
        if stage is None:
            continue
        value = stage.get(number)
        if value is None:
            value = stage["extra"].get(number, {}).get("sum")
        if value is not None:
            steps.append({"label": label, "stage": stage["stage"], "rows": value})
    return steps
