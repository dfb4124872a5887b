"""The demo's responsible-data filters (issue 23), run on the pool once the round-0 encoder has
scored it; their measured effect is DEMO_DIR/report.json's `filters` object.

- nsfw: `nsfw-fit` on a seeded share of the pool labelled by the world's truth (`unsafe`, the
  mini web's abstract stand-in pattern), then `nsfw` on the whole pool (POOL/curation/nsfw, so
  `shards --require nsfw` applies it); measured on the rows not used for fitting.
- faces: `detect-faces` on the pool (the mini web draws no faces, so it reports what it finds
  there) and the detector's recall on the real face photos that ship in scikit-image's wheel.
- debias and language: `debias` and `langmix` with their defaults (langmix en=0.9,other=0.1).

Each entry says why when its stage cannot run on the pool (`{"off": reason}`); nothing here
stops the demo. Every stage runs through its own `run(config, options)` driver.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.metaclip.balancing import uid_uniforms
from curation.score.pool import list_pool_shards, read_sidecar
from curation.stages import debias, detect_faces, langmix, nsfw, nsfw_fit
from curation.stages.common import ConfigError, RunOptions

LANGUAGE_MIX = {"en": 0.9, "other": 0.1}
# Share of the labelled pool (by uid) nsfw-fit sees; the rest measures the filter. A fifth is
# plenty for the stand-in (small world, seed 0, round-0 embeddings, five seeded splits: all 606
# held-out planted rows removed at 4 false removals of 10,992 with a fifth; 359 of 359 at 1 of
# 6,817 with half) and leaves ~120 planted rows to measure on, not ~75.
FIT_SHARE = 0.2


def pool_truth(pool: str, world_dir: str) -> pa.Table:
    """uid and unsafe of every downloaded pool row, from the world's per-URL truth."""
    truth = pq.read_table(str(Path(world_dir) / "truth_images.parquet"), columns=["url", "unsafe"])
    unsafe = dict(zip(truth["url"].to_pylist(), truth["unsafe"].to_pylist()))
    uids: list[str] = []
    labels: list[bool] = []
    for shard in list_pool_shards(pool):
        rows = read_sidecar(shard.sidecar, ["uid", "url"])
        for uid, url in zip(rows["uid"].to_pylist(), rows["url"].to_pylist()):
            if url in unsafe:
                uids.append(uid)
                labels.append(bool(unsafe[url]))
    return pa.table({"uid": pa.array(uids, pa.string()), "unsafe": pa.array(labels, pa.bool_())})


def fit_split(uids: list[str], seed: int, share: float = FIT_SHARE) -> np.ndarray:
    """True for the uids nsfw-fit learns from: a seeded draw per uid."""
    return uid_uniforms(uids, seed, "demo_nsfw_fit") < share


def run_nsfw(
    pool: str,
    truth: pa.Table,
    scores: str,
    work_dir: str,
    seed: int,
    options: RunOptions,
    settings: nsfw_fit.FitSettings = nsfw_fit.FitSettings(),
    fit_share: float = FIT_SHARE,
) -> dict[str, Any]:
    fitted = fit_split(truth["uid"].to_pylist(), seed, fit_share)
    labels = str(Path(work_dir) / "nsfw_labels.parquet")
    pq.write_table(truth.filter(pa.array(fitted)), labels)
    head = str(Path(work_dir) / "nsfw_head.safetensors")
    fit = nsfw_fit.run(nsfw_fit.NsfwFitConfig(pool, labels, head, scores, settings), options)[-1]
    applied = nsfw.run(nsfw.NsfwConfig(pool, head, scores=scores), options)[-1]
    if not applied.ok:
        return {"off": f"nsfw failed on shards {applied.failed}"}
    decisions = pa.concat_tables(
        fsio.read_parquet(url, ["uid", "nsfw_probability", "keep_nsfw"])
        for url in fsio.expand(fsio.join(applied.out_dir, "[0-9]*.parquet"))
    )
    probability = decisions["nsfw_probability"].to_numpy(zero_copy_only=False)
    removed = dict(
        zip(decisions["uid"].to_pylist(), (~decisions["keep_nsfw"].to_numpy(False)).tolist())
    )
    embedded = {u for u, p in zip(decisions["uid"].to_pylist(), probability) if np.isfinite(p)}
    held = [
        (uid, unsafe)
        for uid, unsafe, fit_row in zip(
            truth["uid"].to_pylist(), truth["unsafe"].to_pylist(), fitted
        )
        if not fit_row and uid in embedded
    ]
    planted = [uid for uid, unsafe in held if unsafe]
    safe = [uid for uid, unsafe in held if not unsafe]
    removed_planted = sum(removed[uid] for uid in planted)
    false_removed = sum(removed[uid] for uid in safe)
    return {
        "planted": len(planted),
        "removed_planted": removed_planted,
        "false_removal_rate": round(false_removed / len(safe), 4) if safe else None,
        "safe": len(safe),
        "false_removed": false_removed,
        "threshold": applied.summary["threshold"],
        "fitted_on": {
            "rows": fit.summary["labelled_rows"],
            "unsafe": fit.summary["unsafe_rows"],
        },
    }


def run_faces(pool: str, options: RunOptions, detector: str = "mtcnn") -> dict[str, Any]:
    from curation.ingest.face_detect import FaceDetector

    found = detect_faces.run(detect_faces.DetectFacesConfig(pool, detector=detector), options)[-1]
    try:
        from curation.ingest.face_samples import SOURCE, measure

        measured = measure(FaceDetector(detector))
    except ImportError as exc:  # scikit-image is a dev extra: no sample photos without it
        return {"off": f"no sample face photos to measure recall on ({exc})"}
    pool_faces = int(found.summary.get("faces", 0))
    return {
        "planted": measured["faces"],
        "detected": measured["detected"],
        "recall": round(measured["recall"], 4),
        "source": SOURCE,
        "false_positive_rate": round(measured["false_positive_rate"], 4),
        "detector": detector,
        "pool_images": sum(int(r.get("rows_in", 0)) for r in found.completed),
        "pool_images_with_faces": int(found.summary.get("images_with_faces", 0)),
        "pool_faces": pool_faces,
        # The mini web draws no faces: whatever the detector finds in it is a false detection,
        # and blurring it would only damage a picture. On a real pool, run blur-faces with these
        # boxes before scoring (the curation stages read the blurred images).
        "blur": f"not applied: the mini web draws no faces ({pool_faces} false detections); "
        f"blur-faces --face-boxes {found.out_dir} blurs what it found",
    }


def run_debias(pool: str, metadata: str, options: RunOptions) -> dict[str, Any]:
    reports = debias.run(debias.DebiasConfig(pool, metadata), options)
    if not all(r.ok for r in reports):
        return {"off": f"debias failed in pass {next(r.stage for r in reports if not r.ok)}"}
    summary = reports[-1].summary
    if not summary["attributed_rows_before"]:
        return {
            "off": f"no caption in the pool names one value of {summary['attribute']} "
            f"(terms: {debias.DEFAULT_TERMS}): nothing to resample",
            "eligible_rows": summary["eligible_rows"],
        }
    return {
        "association_before": round(summary["association_before"], 4),
        "association_after": round(summary["association_after"], 4),
        "target": summary["target"],
        "kept_share": round(summary["kept_share"], 4),
    }


def run_language(pool: str, mix: Mapping[str, float], options: RunOptions) -> dict[str, Any]:
    reports = langmix.run(langmix.LangmixConfig(pool, dict(mix)), options)
    if not all(r.ok for r in reports):
        return {"off": f"langmix failed in pass {next(r.stage for r in reports if not r.ok)}"}
    summary = reports[-1].summary
    entry: dict[str, Any] = {
        "target": summary["target"],
        "achieved": {k: round(v, 4) for k, v in summary["achieved"].items()},
        "kept_share": round(summary["kept_share"], 4),
    }
    if summary["no_rows"]:
        entry["off"] = f"no rows at all for {', '.join(summary['no_rows'])}: the mix cannot hold"
    return entry


FILTERS: tuple[str, ...] = ("nsfw", "faces", "debias", "language")


def guarded(name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A stage that cannot run on this pool says why instead of stopping the demo."""
    try:
        return step()
    except (ConfigError, fsio.PlanMismatchError, ValueError, OSError) as exc:
        print(f"filters: {name} is off: {exc}", flush=True)
        return {"off": f"{type(exc).__name__}: {exc}"}


def run_filters(
    pool: str,
    world_dir: str,
    work_dir: str,
    seed: int,
    options: RunOptions = RunOptions(),
    scores: str = "",
    metadata: str = "",
    language_mix: Mapping[str, float] = LANGUAGE_MIX,
    nsfw_settings: nsfw_fit.FitSettings = nsfw_fit.FitSettings(),
    only: Collection[str] = FILTERS,
    nsfw_fit_share: float = FIT_SHARE,
) -> dict[str, Any]:
    """Run the filters on a scored pool and return report.json's `filters` object (the entries
    of `only`, a subset of FILTERS: the demo runs `nsfw` before round 1's shards, which
    require it, and the others beside round 1's training).

    `scores`: the score folder whose embeddings the NSFW head reads (default
    POOL/curation/score); `metadata`: debias's concepts (default: the world's MetaCLIP entries,
    as balance uses them); `nsfw_settings`: nsfw-fit's, e.g. `FitSettings(max_false_removal=0.01)`
    to calibrate the threshold on its held-out share; `nsfw_fit_share`: the share of the
    labelled rows (by uid) the head is fitted on, the rest measuring it."""
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    scores = scores or fsio.join(pool, "curation", "score")
    metadata = metadata or world_dir
    options = replace(options, seed=seed)
    unknown = set(only) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filters {sorted(unknown)}; choose from {FILTERS}")
    truth = pool_truth(pool, world_dir) if "nsfw" in only else None
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "nsfw": lambda: run_nsfw(
            pool, truth, scores, work_dir, seed, options, nsfw_settings, nsfw_fit_share
        ),
        "faces": lambda: run_faces(pool, options),
        "debias": lambda: run_debias(pool, metadata, options),
        "language": lambda: run_language(pool, language_mix, options),
    }
    return {name: guarded(name, steps[name]) for name in FILTERS if name in only}
