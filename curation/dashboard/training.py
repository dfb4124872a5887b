"""The Training page: loss curves per term and phase, learning rate, t and b, eval metrics.

Reads the trainer's `RUN/train/metrics.jsonl` (one JSON object per logged step, see
training/metrics_log.py) and `RUN/eval/*.json`. The log is re-read when it grows, so the page
follows a run in progress.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

from curation import fsio
from curation.dashboard.layout import RunLayout, missing

MAX_POINTS = 1000
METRICS_FILE = "metrics.jsonl"
# The trainer's loss terms (training/objectives.py): the total, phase 1's sigmoid and LocCa, and
# phase 2's SILC, TIPS, KoLeo and Gram.
LOSS_TERMS = ("loss", "sigmoid", "locca", "silc", "tips", "koleo", "gram")
# Chart groups: (title, test on a metric name), first match wins.
GROUPS: tuple[tuple[str, Any], ...] = (
    ("Evaluation", lambda k: k.startswith(("eval_", "eval/"))),
    ("Loss terms", lambda k: k in LOSS_TERMS or k.startswith("loss_")),
    ("LocCa tasks", lambda k: k.startswith("locca_")),
    ("Learning rate", lambda k: k.startswith("lr")),
    ("Temperature t and bias b", lambda k: k in ("logit_scale", "logit_bias", "t", "b")),
    ("Gradient norm", lambda k: k == "grad_norm"),
)
OTHER = "Throughput and other"


class TrainingLog:
    def __init__(self, layout: RunLayout):
        self.url = fsio.join(layout.train, METRICS_FILE)
        self.eval_dir = layout.eval
        self._lock = threading.Lock()
        self._cached: tuple[int, list[dict[str, Any]], int] | None = (
            None  # (file size, records, bad lines)
        )

    def records(self) -> tuple[list[dict[str, Any]], int]:
        """Parsed records, re-read only when the file's size changed; and the unreadable line count."""
        fs, path = fsio.filesystem(self.url)
        size = fs.size(path)
        with self._lock:
            if self._cached is None or self._cached[0] != size:
                self._cached = (size, *_parse(fs.cat_file(path).decode("utf-8", "replace")))
            return self._cached[1], self._cached[2]

    def page(self) -> dict[str, Any]:
        page: dict[str, Any] = {"evals": self.eval_results(), "missing": []}
        if not fsio.exists(self.url):
            page["missing"].append(missing("train"))
            return page
        records, bad_lines = self.records()
        page.update(
            {
                "steps": len(records),
                "bad_lines": bad_lines,
                "last": records[-1] if records else None,
                "phases": _phases(records),
                "charts": _charts(records),
            }
        )
        if not page["evals"]:
            page["missing"].append(missing("eval"))
        return page

    def eval_results(self) -> list[dict[str, Any]]:
        fs, path = fsio.filesystem(self.eval_dir)
        if not fs.exists(path):
            return []
        results = []
        for name in sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json")):
            try:
                record = json.loads(fs.cat_file(name))
            except ValueError as exc:
                results.append({"file": name.rsplit("/", 1)[-1], "error": f"not JSON: {exc}"})
                continue
            metrics = dict(_numeric_leaves(record))
            results.append({"file": name.rsplit("/", 1)[-1], "metrics": metrics})
        return results


def _parse(text: str) -> tuple[list[dict[str, Any]], int]:
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1  # a line cut short by a killed writer
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
        else:
            bad += 1
    return records, bad


def _numeric_leaves(record: Any, prefix: str = ""):
    if isinstance(record, dict):
        for key, value in record.items():
            yield from _numeric_leaves(value, f"{prefix}{key}.")
    elif (
        isinstance(record, (int, float)) and not isinstance(record, bool) and math.isfinite(record)
    ):
        yield prefix.rstrip("."), record


def _phases(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Contiguous step ranges with the same `phase` value."""
    phases: list[dict[str, Any]] = []
    for record in records:
        phase = record.get("phase")
        if phase is None:
            continue
        if phases and phases[-1]["phase"] == phase:
            phases[-1]["last_step"] = record["step"]
        else:
            phases.append(
                {"phase": phase, "first_step": record["step"], "last_step": record["step"]}
            )
    return phases


def _charts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each numeric metric as a (step, value) series, thinned to MAX_POINTS, grouped into charts."""
    series: dict[str, list[list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if key in ("step", "phase") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                series.setdefault(key, []).append([record["step"], value])
    charts: dict[str, dict[str, list]] = {}
    for key in sorted(series):
        title = next((t for t, test in GROUPS if test(key)), OTHER)
        points = series[key]
        stride = max(1, math.ceil(len(points) / MAX_POINTS))
        thinned = (
            points[::stride]
            if points[-1] is points[::stride][-1]
            else points[::stride] + [points[-1]]
        )
        charts.setdefault(title, {})[key] = thinned
    order = [t for t, _ in GROUPS if t != "Evaluation"] + [OTHER, "Evaluation"]
    return [{"title": t, "series": charts[t]} for t in order if t in charts]
