"""The exact, all-in-one near-dup method: every row of the pool in one process, pairs from one
faiss index per signal, groups from one union-find. It does not scale (at 1B rows x 512 dims it
holds ~1 TB of fp16), so the stage no longer uses it; it stays as the reference the distributed
method is measured against (benchmarks/neardup_scale.py, tests/curation/neardup)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation import fsio
from curation.neardup.evalset import EvalReference, MatchRule, match_eval
from curation.neardup.rows import aspect_agrees, log_aspect, unit_rows
from curation.runner import ShardTask
from curation.score.neighbours import equal_value_pairs, similar_pairs, union_find_roots
from curation.score.pool import read_sidecar
from curation.score.shard_scoring import embeddings_name, signatures_name


@dataclass(frozen=True)
class ShardRows:
    """One pool shard's rows as the score stage left them (row-aligned arrays)."""

    uid: list[str]
    sha256: list[str | None]
    score: np.ndarray  # float32, NaN = unscored
    vectors: np.ndarray  # [n, d] float16 CLIP image embeddings
    pixels: np.ndarray  # [n, 432] float16 pixel signatures; 0 if undecodable
    aspect: np.ndarray  # log(width / height); NaN if unknown


def read_shard_rows(task: ShardTask, score_dir: str, tag: str) -> ShardRows:
    sidecar = read_sidecar(task.inputs[1], ["uid", "sha256", "width", "height"])
    scores_url = fsio.join(score_dir, f"{task.shard_id}.parquet")
    if not fsio.exists(scores_url):
        raise FileNotFoundError(
            f"neardup: {scores_url} is missing; run `python -m curation score` first"
        )
    scores = fsio.read_parquet(scores_url, ["uid", f"clip_score_{tag}"])
    if scores["uid"].to_pylist() != sidecar["uid"].to_pylist():
        raise ValueError(f"neardup: {scores_url} rows do not match {task.inputs[1]}; re-run score")
    return ShardRows(
        uid=scores["uid"].to_pylist(),
        sha256=sidecar["sha256"].to_pylist(),
        score=scores[f"clip_score_{tag}"].to_numpy(zero_copy_only=False).astype(np.float32),
        vectors=_load_rows(score_dir, embeddings_name(task.shard_id), scores.num_rows),
        pixels=_load_rows(score_dir, signatures_name(task.shard_id), scores.num_rows),
        aspect=log_aspect(
            sidecar["width"].to_numpy(zero_copy_only=False),
            sidecar["height"].to_numpy(zero_copy_only=False),
        ),
    )


def _load_rows(score_dir: str, name: str, rows: int) -> np.ndarray:
    """A per-shard .npy array, checked to be row-aligned with the shard's score file."""
    url = fsio.join(score_dir, name)
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as handle:
        array = np.load(handle)
    if len(array) != rows:
        raise ValueError(
            f"neardup: {url} has {len(array)} rows, its score file {rows}; re-run score"
        )
    return array


@dataclass
class PoolEmbeddings:
    shard: list[str] = field(default_factory=list)
    uid: list[str] = field(default_factory=list)
    sha256: list[str | None] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)  # pixel signatures; 0 if undecodable
    aspect: list[np.ndarray] = field(default_factory=list)  # log(width / height); NaN if unknown
    vectors: list[np.ndarray] = field(default_factory=list)


def load_pool_embeddings(tasks: list[ShardTask], score_dir: str, tag: str) -> PoolEmbeddings:
    loaded = PoolEmbeddings()
    for task in tasks:
        rows = read_shard_rows(task, score_dir, tag)
        loaded.shard += [task.shard_id] * len(rows.uid)
        loaded.uid += rows.uid
        loaded.sha256 += rows.sha256
        loaded.score.append(rows.score)
        loaded.pixels.append(rows.pixels.astype(np.float32))
        loaded.aspect.append(rows.aspect)
        loaded.vectors.append(rows.vectors.astype(np.float32))
    return loaded


def decide_duplicates(
    loaded: PoolEmbeddings, rule: MatchRule, reference: EvalReference | None
) -> tuple[pa.Table, dict[str, Any]]:
    """One row per pool sample: shard, uid, dup_cluster, keep_dedup, contaminated, nearest_eval.
    dup_cluster is the representative's pool-wide row number (shards in id order)."""
    n = len(loaded.uid)
    if n == 0:
        raise ValueError("neardup: the pool has no scored samples")
    scores = np.concatenate(loaded.score)
    vectors = unit_rows(np.concatenate(loaded.vectors))
    scored = np.flatnonzero(np.isfinite(scores))
    signatures = unit_rows(np.concatenate(loaded.pixels))
    signed = np.flatnonzero(np.any(signatures != 0, axis=1))

    exact = equal_value_pairs(loaded.sha256)
    embedding = np.empty((0, 2), dtype=np.int64)
    if rule.use_embeddings:
        embedding = scored[
            similar_pairs(vectors[scored], rule.threshold, rule.index, rule.neighbours)
        ]
    aspect = np.concatenate(loaded.aspect) if loaded.aspect else np.full(n, np.nan)
    pixel = signed[
        similar_pairs(signatures[signed], rule.pixel_threshold, rule.index, rule.neighbours)
    ]
    pixel = pixel[
        aspect_agrees(aspect[pixel[:, 0]], aspect[pixel[:, 1]], rule.pixel_aspect_tolerance)
    ]
    roots = union_find_roots(
        n, np.concatenate([exact, embedding.reshape(-1, 2), pixel.reshape(-1, 2)])
    )

    # Representative: highest score (unscored rank lowest), ties by smallest uid.
    rank_score = np.where(np.isfinite(scores), scores, -np.inf)
    order = sorted(range(n), key=lambda i: (roots[i], -rank_score[i], loaded.uid[i]))
    representative = {}
    for i in order:
        representative.setdefault(int(roots[i]), i)
    sizes = np.bincount(roots, minlength=n)
    in_cluster = sizes[roots] > 1
    dup_cluster = np.where(in_cluster, [representative[int(r)] for r in roots], -1).astype(np.int64)
    keep = np.array([not in_cluster[i] or representative[int(roots[i])] == i for i in range(n)])

    nearest_eval: list[str | None] = [None] * n
    contaminated = np.zeros(n, dtype=bool)
    if reference is not None:
        contaminated, nearest_eval = match_eval(
            reference, rule, loaded.sha256, vectors, scored, signatures, signed, aspect
        )
    direct = int(contaminated.sum())
    tainted_roots = np.unique(roots[contaminated])
    contaminated |= np.isin(roots, tainted_roots) & in_cluster
    summary = {
        "samples": n,
        "clusters": int(np.count_nonzero(sizes > 1)),
        "duplicates_removed": int(np.count_nonzero(~keep)),
        "pairs": {"sha256": len(exact), "embedding": len(embedding), "pixel": len(pixel)},
        "contaminated_direct": direct,
        "contaminated_via_cluster": int(contaminated.sum()) - direct,
        "eval_images": len(reference.names) if reference else 0,
    }
    table = pa.table(
        {
            "shard": loaded.shard,
            "uid": loaded.uid,
            "dup_cluster": dup_cluster,
            "keep_dedup": keep,
            "contaminated": contaminated,
            "nearest_eval": pa.array(nearest_eval, pa.string()),
        }
    )
    return table, summary
