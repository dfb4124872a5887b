"""The Training page: loss curves per term and phase, learning rate, t and b, eval metrics.

A run folder may hold several training runs: `make demo` trains `train_round0/` and then `train/`.
Each has the trainer's `metrics.jsonl` (one JSON object per logged step, see
training/metrics_log.py) and the reports `python -m training eval --ckpt RUN/train…` writes to
`eval/step_NNNNNNNN.json`. The page draws one run's curves (`train` unless asked for another) and
the evaluation results of every run side by side. A log is re-read when it grows, so the page
follows a run in progress. Logs written before resumes truncated them may repeat steps: each
step's last record counts, as in training.metrics_log.read_metrics.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

from curation import fsio
from curation.dashboard.layout import EVAL_DIR, METRICS_FILE, missing
from training.metrics_log import append_record

MAX_POINTS = 1000
DEFAULT_RUN = "train"
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
    """One training run folder: its metrics log and its evaluation reports."""

    def __init__(self, folder: str):
        self.name = folder.rstrip("/").rsplit("/", 1)[-1]
        self.url = fsio.join(folder, METRICS_FILE)
        self.eval_dir = fsio.join(folder, EVAL_DIR)
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

    def curves(self) -> dict[str, Any]:
        """The log's numbers for the charts; `missing` when there is no log."""
        if not fsio.exists(self.url):
            return {"missing": [missing("train")]}
        records, bad_lines = self.records()
        return {
            "steps": len(records),
            "bad_lines": bad_lines,
            "last": records[-1] if records else None,
            "phases": _phases(records),
            "charts": _charts(records),
        }

    def eval_results(self) -> list[dict[str, Any]]:
        """Every evaluation report of this run, by step (numeric leaves flattened to dotted names)."""
        fs, path = fsio.filesystem(self.eval_dir)
        if not fs.exists(path):
            return []
        results = []
        for name in sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json")):
            file = f"{self.name}/{EVAL_DIR}/{name.rsplit('/', 1)[-1]}"
            try:
                record = json.loads(fs.cat_file(name))
            except ValueError as exc:
                results.append({"run": self.name, "file": file, "error": f"not JSON: {exc}"})
                continue
            metrics = dict(_numeric_leaves(record))
            results.append({"run": self.name, "file": file, "metrics": metrics})
        return results


def training_page(logs: list[TrainingLog], run: str | None = None) -> dict[str, Any]:
    """The curves of run `run` (default `train`, else the last run), every run's eval results."""
    names = [log.name for log in logs]
    if run is not None and run not in names:
        raise KeyError(f"no training run {run!r} in this run folder (runs: {names})")
    chosen = run or (DEFAULT_RUN if DEFAULT_RUN in names else (names[-1] if names else None))
    page: dict[str, Any] = {"runs": names, "run": chosen, "missing": []}
    if chosen is None:
        page["missing"].append(missing("train"))
    else:
        page.update(next(log for log in logs if log.name == chosen).curves())
    page["evals"] = [result for log in logs for result in log.eval_results()]
    if not page["evals"]:
        page["missing"].append(missing("eval"))
    return page


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
            append_record(records, record)  # a resumed run's log may repeat steps: keep the last
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
