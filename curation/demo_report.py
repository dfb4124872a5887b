"""The demo's arms compared: truth-graded training pairs, the reference arm's shards, and metrics
with their standard errors (DEMO_DIR/report.json and its printed table)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from curation.training_samples import kept_rows
from training.data.tars import iter_tar_samples, write_tar
from training.eval import HITS_SUFFIX, read_hit_string

# (task, metric) of a run's evaluation that the report carries.
HEADLINE_METRICS = (
    ("zeroshot", "top1"),
    ("retrieval", "text_to_image_R@1"),
    ("retrieval", "image_to_text_R@1"),
    ("grounding", "acc@0.5"),
    ("dense", "mIoU"),
    ("knn", "top1@k10"),
    ("aspect", "square_top1"),
    ("aspect", "naflex_top1"),
)
REFERENCE_DONE = "_reference.json"


def parquet_rows(folder: Path, columns: list[str]) -> list[dict]:
    files = sorted(str(p) for p in folder.glob("[0-9]*.parquet"))
    if not files:
        return []
    return ds.dataset(files, format="parquet").to_table(columns=columns).to_pylist()


def correct_pairs(world_dir: Path) -> set[tuple[str, str]]:
    """(image URL, text) of every pair the world's truth calls correctly captioned."""
    truth = (
        ds.dataset(str(world_dir / "truth.parquet"))
        .to_table(columns=["image_url", "text", "caption_correct"])
        .to_pylist()
    )
    return {(r["image_url"], r["text"]) for r in truth if r["caption_correct"]}


def correctly_captioned_share(
    train_shards: Path, correct: set[tuple[str, str]]
) -> tuple[int, float]:
    """(samples, share the truth calls correctly captioned) of a folder of training shards."""
    rows = parquet_rows(train_shards, ["url", "text"])
    good = sum((r["url"], r["text"]) in correct for r in rows)
    return len(rows), good / max(len(rows), 1)


def write_filtered_shards(
    source: Path, out: Path, keep: Callable[[pa.Table], pa.Array], done_name: str = REFERENCE_DONE
) -> int:
    """Write `source`'s training shards with only the rows `keep(sidecar)` marks True into `out`
    (same names and order; a tar and its Parquet sidecar each). Returns the sample count; a
    finished `out` (its marker, `done_name`, written last) is kept as it is."""
    done = out / done_name
    if done.exists():
        return json.loads(done.read_text())["samples"]
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for tar in sorted(source.glob("[0-9]*.tar")):
        sidecar = pq.read_table(tar.with_suffix(".parquet"))
        kept = sidecar.filter(keep(sidecar))
        keys = set(kept["key"].to_pylist())
        samples = [(raw.key, raw.files) for raw in iter_tar_samples(str(tar)) if raw.key in keys]
        write_tar(out / tar.name, samples)
        pq.write_table(kept, out / tar.with_suffix(".parquet").name)
        total += len(samples)
    done.write_text(json.dumps({"source": str(source), "samples": total}))
    return total


def write_reference_shards(source: Path, out: Path, correct: set[tuple[str, str]]) -> int:
    """The reference arm: `source`'s shards with only their correctly captioned samples, what a
    perfect caption filter keeps of the same pool (see write_filtered_shards)."""

    def is_correct(sidecar: pa.Table) -> pa.Array:
        pairs = zip(sidecar["url"].to_pylist(), sidecar["text"].to_pylist())
        return pa.array([pair in correct for pair in pairs])

    return write_filtered_shards(source, out, is_correct)


def kept_correct_shares(
    pool: Path, score_dirs: Mapping[str, Path], require: list[str], correct: set[tuple[str, str]]
) -> dict[str, dict[str, float]]:
    """Per named score folder: what its keep_score keeps of the pool rows the stages in
    `require` keep, how many, and the share the truth calls correctly captioned (the round-0
    encoder's own choice and the cross-fit one, side by side in the report). The pool and the
    stages' flags are read once for every folder."""
    kept = dict.fromkeys(score_dirs, 0)
    good = dict.fromkeys(score_dirs, 0)
    for sidecar in sorted(pool.glob("[0-9]*.parquet")):
        rows = kept_rows(str(pool), sidecar.stem, str(sidecar), require)
        pairs = dict(
            zip(rows["uid"].to_pylist(), zip(rows["url"].to_pylist(), rows["text"].to_pylist()))
        )
        for name, score_dir in score_dirs.items():
            flags = pq.read_table(score_dir / sidecar.name, columns=["uid", "keep_score"])
            for uid, keep in zip(flags["uid"].to_pylist(), flags["keep_score"].to_pylist()):
                if keep and uid in pairs:
                    kept[name] += 1
                    good[name] += pairs[uid] in correct
    return {
        name: {
            "kept": kept[name],
            "correct_caption_share": round(good[name] / max(kept[name], 1), 4),
        }
        for name in score_dirs
    }


def standard_error(value: float, trials: int | None) -> float | None:
    """Binomial standard error of a share of `trials` independent trials (None without)."""
    if not trials:
        return None
    return math.sqrt(max(value * (1.0 - value), 0.0) / trials)


def latest_eval(run: Path) -> dict[str, dict]:
    """The results of the run's latest evaluation ({} when it has none)."""
    reports = sorted((run / "eval").glob("step_*.json"))
    return json.loads(reports[-1].read_text())["results"] if reports else {}


def arm_metrics(
    results: dict[str, dict], eval_sizes: dict[str, int]
) -> dict[str, dict[str, float | None]]:
    """{"task/metric": {"value", "se"}} of a run's evaluation results (latest_eval). Accuracies
    and recalls get their binomial standard error over the set's trials (zero-shot and k-NN: its
    images; grounding: its queries; retrieval: its captions, one per image); dense mIoU is no
    share of independent trials and gets se null."""
    if not results:
        return {}
    metrics: dict[str, dict[str, float | None]] = {}
    for task, metric in HEADLINE_METRICS:
        values = results.get(task, {})
        if metric not in values:
            continue
        value = float(values[metric])
        trials = {
            "retrieval": eval_sizes.get("retrieval"),
            "knn": eval_sizes.get("zeroshot"),
            "dense": None,
        }.get(task, values.get("queries") or values.get("samples"))
        metrics[f"{task}/{metric}"] = {"value": value, "se": standard_error(value, trials)}
    return metrics


def paired_difference(hits_a: np.ndarray, hits_b: np.ndarray) -> dict[str, float | int]:
    """A's accuracy minus B's on the same trials, with the standard error of that difference
    from the per-trial differences (a_i - b_i in {-1, 0, 1}): sqrt(var / n). Trials both get
    right or both miss add nothing, so on the same set this is tighter than the two arms' own
    standard errors combined, sqrt(se_a^2 + se_b^2), whenever their outcomes correlate."""
    if hits_a.shape != hits_b.shape or not len(hits_a):
        raise ValueError(f"paired outcomes need the same trials: {len(hits_a)} and {len(hits_b)}")
    diff = hits_a.astype(np.float64) - hits_b.astype(np.float64)
    se = math.sqrt(float(diff.var()) / len(diff))
    mean = float(diff.mean())
    return {
        "difference": mean,
        "se": se,
        "z": mean / se if se else 0.0,
        "trials": len(diff),
    }


def paired_comparisons(
    results: Mapping[str, dict[str, dict]], pairs: list[tuple[str, str]]
) -> dict[str, dict[str, dict[str, float | int]]]:
    """{"A - B": {"task/metric": paired_difference}} for each (A, B) in `pairs` of the named
    runs' evaluation results (latest_eval), over every headline metric whose per-trial
    outcomes both stored."""
    comparisons: dict[str, dict[str, dict[str, float | int]]] = {}
    for a, b in pairs:
        entry = {}
        for task, metric in HEADLINE_METRICS:
            key = metric + HITS_SUFFIX
            hits_a = results[a].get(task, {}).get(key)
            hits_b = results[b].get(task, {}).get(key)
            if hits_a is None or hits_b is None:
                continue
            entry[f"{task}/{metric}"] = paired_difference(
                read_hit_string(hits_a), read_hit_string(hits_b)
            )
        comparisons[f"{a} - {b}"] = entry
    return comparisons


def seed_comparisons(
    results_by_seed: Mapping[str, list[dict[str, dict]]], pairs: list[tuple[str, str]]
) -> dict[str, dict[str, dict]]:
    """Differences over training seeds: for each (A, B) in `pairs` and each headline metric
    both report, {"A - B": {"task/metric": {"differences": per seed (A's seed k minus B's seed
    k), "mean", "se" (sd of the differences / sqrt(seeds); None for one seed), "seeds"}}}.
    `results_by_seed` holds each arm's evaluation results (latest_eval), seed 0 first. Unlike
    the paired eval standard error, this one counts how much retraining moves the arms."""
    comparisons: dict[str, dict[str, dict]] = {}
    for a, b in pairs:
        entry = {}
        for task, metric in HEADLINE_METRICS:
            differences = [
                float(ra[task][metric]) - float(rb[task][metric])
                for ra, rb in zip(results_by_seed[a], results_by_seed[b])
                if metric in ra.get(task, {}) and metric in rb.get(task, {})
            ]
            if not differences:
                continue
            seeds = len(differences)
            se = float(np.std(differences, ddof=1)) / math.sqrt(seeds) if seeds > 1 else None
            entry[f"{task}/{metric}"] = {
                "differences": differences,
                "mean": float(np.mean(differences)),
                "se": se,
                "seeds": seeds,
            }
        comparisons[f"{a} - {b}"] = entry
    return comparisons


def seed_comparisons_table(comparisons: dict[str, dict[str, dict]]) -> str:
    """One line per (pair, metric): each seed's difference, their mean ± standard error."""
    lines = []
    for pair, metrics in comparisons.items():
        for metric, entry in metrics.items():
            per_seed = " / ".join(f"{d:+.3f}" for d in entry["differences"])
            se = f" ± {entry['se']:.3f}" if entry["se"] is not None else ""
            lines.append(f"{pair:<22}{metric:<30}{entry['mean']:+.3f}{se}  (seeds: {per_seed})")
    return "\n".join(lines)


def comparisons_table(comparisons: dict[str, dict[str, dict[str, float | int]]]) -> str:
    """One line per (pair, metric): difference ± paired standard error, and their ratio."""
    lines = []
    for pair, metrics in comparisons.items():
        for metric, entry in metrics.items():
            lines.append(
                f"{pair:<22}{metric:<30}{entry['difference']:+.3f} ± {entry['se']:.3f}"
                f"  ({entry['z']:+.1f} se, {entry['trials']} trials)"
            )
    return "\n".join(lines)


def arms_table(arms: dict[str, dict]) -> str:
    """The report as text: one column per arm, value ± standard error per metric."""
    names = list(arms)
    width = 18
    lines = [f"{'':<30}" + "".join(f"{n:>{width}}" for n in names)]
    lines.append(
        f"{'training samples':<30}" + "".join(f"{arms[n]['samples']:>{width}}" for n in names)
    )
    lines.append(
        f"{'correctly captioned share':<30}"
        + "".join(f"{arms[n]['correct_caption_share']:>{width}.3f}" for n in names)
    )
    for metric in dict.fromkeys(m for arm in arms.values() for m in arm["metrics"]):
        cells = []
        for name in names:
            entry = arms[name]["metrics"].get(metric)
            if entry is None:
                cells.append(f"{'-':>{width}}")
            elif entry["se"] is None:
                cells.append(f"{entry['value']:>{width}.3f}")
            else:
                cells.append(f"{entry['value']:.3f} ± {entry['se']:.3f}".rjust(width))
        lines.append(f"{metric:<30}" + "".join(cells))
    return "\n".join(lines)
