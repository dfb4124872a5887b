"""`python -m curation neardup`: collapse duplicate images and remove eval-set contaminants.

Global step (driver): every scored pool sample is linked to its duplicates by three signals:
identical sha256 of the stored JPEG, cosine >= --threshold between saved CLIP image embeddings
(faiss), and cosine >= --pixel-threshold between pixel signatures (12x12 RGB thumbnails: robust to
re-encoding and resizing even when the scorer is untrained; see score/images.py) of images whose
aspect ratios agree (a thumbnail squashes any picture to a square, so a tall strip and a landscape
photo over the same background would otherwise match). Linked samples form clusters (union-find); each keeps its highest
scoring member (ties: smallest uid). A sample is contaminated when it matches an eval image by any
of the same signals (cosine >= --eval-threshold), and so is every member of its cluster.
The decisions go to OUT/_global/decisions.parquet; then a run_stage pass writes the contract
file OUT/{shard}.parquet per pool shard (uid, dup_cluster, keep_dedup, contaminated, nearest_eval).
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import fsio
from curation.runner import ShardContext, ShardTask, StageReport, run_stage
from curation.score.eval_images import load_eval_images
from curation.score.images import SIGNATURE_DIM, ImageDecodeError, decode_rgb, pixel_signature
from curation.score.model import ScorerSpec
from curation.score.neighbours import (
    equal_value_pairs,
    nearest,
    nearest_k,
    similar_pairs,
    union_find_roots,
)
from curation.score.pool import read_sidecar
from curation.score.reapply import DIGEST_KEY, invalidate_other_decisions
from curation.score.shard_scoring import embeddings_name, signatures_name
from curation.stages.score import SCORER_RECORD, pool_tasks

DECISIONS = "_global/decisions.parquet"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class NeardupConfig:
    threshold: float = 0.95
    eval_threshold: float = 0.95
    pixel_threshold: float = 0.97  # pixel-signature cosine; above 1 disables the signal
    index: str = "auto"
    neighbours: int = 16
    use_embeddings: bool | None = (
        None  # None: on unless the scorer is untrained; off for an untrained scorer: its embeddings all look alike
    )
    # Pixel matches need |log(aspect_a / aspect_b)| <= this: copies, re-encodes and resizes keep the
    # aspect ratio and 5% crops change it by ~0.05; on the mini Common Crawl, without the gate, 53 of
    # 73 eval "contaminants" were distinct pictures over the same gradient background.
    pixel_aspect_tolerance: float = 0.15


def log_aspect(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    width = np.asarray(width, dtype=np.float64)
    height = np.asarray(height, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            (width > 0) & (height > 0), width / np.where(height > 0, height, 1), np.nan
        )
        return np.log(ratio)


def aspect_agrees(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    """Elementwise: the two log aspect ratios are within `tolerance` (unknown ratios never block)."""
    close = np.abs(a - b) <= tolerance
    return close | np.isnan(a) | np.isnan(b)


@dataclass
class PoolEmbeddings:
    shard: list[str] = field(default_factory=list)
    uid: list[str] = field(default_factory=list)
    sha256: list[str | None] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)  # pixel signatures; 0 if undecodable
    aspect: list[np.ndarray] = field(default_factory=list)  # log(width / height); NaN if unknown
    vectors: list[np.ndarray] = field(default_factory=list)


def load_pool_embeddings(
    pool: str, score_dir: str, tag: str
) -> tuple[PoolEmbeddings, list[ShardTask]]:
    tasks = pool_tasks(pool)
    loaded = PoolEmbeddings()
    for task in tasks:
        sidecar = read_sidecar(task.inputs[1], ["uid", "sha256", "width", "height"])
        scores_url = fsio.join(score_dir, f"{task.shard_id}.parquet")
        if not fsio.exists(scores_url):
            raise SystemExit(
                f"neardup: {scores_url} is missing; run `python -m curation score` first"
            )
        fs, path = fsio.filesystem(scores_url)
        with fs.open(path, "rb") as handle:
            scores = pq.read_table(handle)
        if scores["uid"].to_pylist() != sidecar["uid"].to_pylist():
            raise SystemExit(
                f"neardup: {scores_url} rows do not match {task.inputs[1]}; re-run score"
            )
        vectors = _load_rows(score_dir, embeddings_name(task.shard_id), scores.num_rows)
        loaded.shard += [task.shard_id] * scores.num_rows
        loaded.uid += scores["uid"].to_pylist()
        loaded.sha256 += sidecar["sha256"].to_pylist()
        loaded.score.append(scores[f"clip_score_{tag}"].to_numpy(zero_copy_only=False))
        loaded.pixels.append(_load_rows(score_dir, signatures_name(task.shard_id), scores.num_rows))
        loaded.aspect.append(
            log_aspect(
                sidecar["width"].to_numpy(zero_copy_only=False),
                sidecar["height"].to_numpy(zero_copy_only=False),
            )
        )
        loaded.vectors.append(vectors)
    return loaded, tasks


def _load_rows(score_dir: str, name: str, rows: int) -> np.ndarray:
    """A per-shard .npy array, checked to be row-aligned with the shard's score file."""
    url = fsio.join(score_dir, name)
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as handle:
        array = np.load(handle)
    if len(array) != rows:
        raise SystemExit(
            f"neardup: {url} has {len(array)} rows, its score file {rows}; re-run score"
        )
    return array.astype(np.float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1), dtype=np.float32)


@dataclass
class EvalReference:
    names: list[str]
    sha256: list[str]
    vectors: np.ndarray
    pixels: np.ndarray
    aspect: np.ndarray  # log(width / height)


def embed_eval_sets(folders: list[str], spec: ScorerSpec, batch_size: int = 64) -> EvalReference:
    """Sign and embed every eval image with the pool's scorer (in this process: eval sets are small)."""
    from curation.score.embedder import ClipEmbedder, build_transform

    images = load_eval_images(folders)
    embedder = ClipEmbedder(spec)
    transform = build_transform(embedder.preprocess_cfg())
    names, shas, pixels, signatures, aspects = [], [], [], [], []
    for image in images:
        try:
            decoded = decode_rgb(image.data)
        except ImageDecodeError as exc:
            print(f"neardup: skipping eval image {image.name}: {exc}")
            continue
        names.append(image.name)
        shas.append(image.sha256)
        signatures.append(pixel_signature(decoded))
        aspects.append((decoded.width, decoded.height))
        pixels.append(transform(decoded).numpy())
    vectors = [
        embedder.embed_images(np.stack(pixels[i : i + batch_size]))
        for i in range(0, len(pixels), batch_size)
    ]
    dim = int(embedder.scorer.config["model_cfg"]["embed_dim"])
    return EvalReference(
        names,
        shas,
        _unit_rows(np.concatenate(vectors) if vectors else np.zeros((0, dim))),
        _unit_rows(np.array(signatures, np.float32).reshape(len(signatures), SIGNATURE_DIM)),
        log_aspect(*np.array(aspects, np.float64).reshape(-1, 2).T),
    )


def decide_duplicates(
    loaded: PoolEmbeddings, config: NeardupConfig, reference: EvalReference | None
) -> tuple[pa.Table, dict[str, Any]]:
    """One row per pool sample: shard, uid, dup_cluster, keep_dedup, contaminated, nearest_eval."""
    n = len(loaded.uid)
    if n == 0:
        raise SystemExit("neardup: the pool has no scored samples")
    scores = np.concatenate(loaded.score)
    vectors = _unit_rows(np.concatenate(loaded.vectors))
    scored = np.flatnonzero(np.isfinite(scores))
    signatures = _unit_rows(np.concatenate(loaded.pixels))
    signed = np.flatnonzero(np.any(signatures != 0, axis=1))

    exact = equal_value_pairs(loaded.sha256)
    embedding = np.empty((0, 2), dtype=np.int64)
    if config.use_embeddings:
        embedding = scored[
            similar_pairs(vectors[scored], config.threshold, config.index, config.neighbours)
        ]
    aspect = np.concatenate(loaded.aspect) if loaded.aspect else np.full(n, np.nan)
    pixel = signed[
        similar_pairs(signatures[signed], config.pixel_threshold, config.index, config.neighbours)
    ]
    pixel = pixel[
        aspect_agrees(aspect[pixel[:, 0]], aspect[pixel[:, 1]], config.pixel_aspect_tolerance)
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
    # A cluster is named by its representative's pool-wide row number (shards in id order).
    dup_cluster = np.where(in_cluster, [representative[int(r)] for r in roots], -1).astype(np.int64)
    keep = np.array([not in_cluster[i] or representative[int(roots[i])] == i for i in range(n)])

    nearest_eval: list[str | None] = [None] * n
    contaminated = np.zeros(n, dtype=bool)
    if reference is not None and len(reference.names):
        by_sha = {sha: name for sha, name in zip(reference.sha256, reference.names)}
        sims, ids = nearest(vectors[scored], reference.vectors)
        if not config.use_embeddings:
            sims = np.full(len(scored), -np.inf, dtype=np.float32)
        pixel_sims, pixel_ids = nearest_k(signatures[signed], reference.pixels, config.neighbours)
        for row, sim, ref in zip(scored, sims, ids):
            if sim >= config.eval_threshold:
                contaminated[row], nearest_eval[row] = True, reference.names[ref]
        # [signed, k] neighbours that match: close pixels and agreeing aspect ratios (-1 pads).
        hits = (
            (pixel_sims >= config.pixel_threshold)
            & (pixel_ids >= 0)
            & aspect_agrees(
                aspect[signed][:, None],
                reference.aspect[np.maximum(pixel_ids, 0)],
                config.pixel_aspect_tolerance,
            )
        )
        first_hit = pixel_ids[np.arange(len(signed)), hits.argmax(axis=1)]  # best first
        matched = hits.any(axis=1)
        for row, ref in zip(signed[matched], first_hit[matched]):
            if not contaminated[row]:
                contaminated[row], nearest_eval[row] = True, reference.names[ref]
        for row, sha in enumerate(loaded.sha256):
            if sha in by_sha and not contaminated[row]:
                contaminated[row], nearest_eval[row] = True, by_sha[sha]
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


def table_digest(table: pa.Table) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for batch in table.to_batches():
        for column in batch.columns:
            for buffer in column.buffers():
                if buffer is not None:
                    digest.update(memoryview(buffer))
    return digest.hexdigest()


@dataclass(frozen=True)
class WriteNeardupShard:
    decisions_url: str
    digest: str

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        fs, path = fsio.filesystem(self.decisions_url)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle, filters=[("shard", "=", task.shard_id)])
        table = table.drop_columns(["shard"])
        ctx.stats.rows_in = table.num_rows
        duplicates = int(pc.sum(pc.invert(table["keep_dedup"])).as_py() or 0)
        contaminated = int(pc.sum(table["contaminated"]).as_py() or 0)
        ctx.stats.drop("near_duplicate", duplicates)
        ctx.stats.drop("eval_contaminant", contaminated)
        kept = pc.and_(table["keep_dedup"], pc.invert(table["contaminated"]))
        ctx.stats.rows_out = int(pc.sum(kept).as_py() or 0)
        ctx.stats.extra[DIGEST_KEY] = self.digest
        ctx.write_parquet(f"{task.shard_id}.parquet", table)


def run_neardup(
    pool: str,
    out: str,
    score_dir: str,
    config: NeardupConfig,
    eval_folders: list[str],
    seed: int = 0,
) -> tuple[StageReport, dict[str, Any]]:
    scorer = fsio.read_json(fsio.join(score_dir, SCORER_RECORD))
    if config.use_embeddings is None:
        config = replace(config, use_embeddings=not scorer.get("random_init"))
    loaded, tasks = load_pool_embeddings(pool, score_dir, scorer["tag"])
    reference = None
    if eval_folders:
        spec = ScorerSpec(scorer["model_name"], scorer["weights"], scorer.get("model_config"))
        reference = embed_eval_sets(eval_folders, spec)
    table, summary = decide_duplicates(loaded, config, reference)
    summary.update(
        {
            "config": asdict(config),
            "eval_sets": eval_folders,
            "scorer_random_init": scorer.get("random_init"),
        }
    )
    decisions_url = fsio.join(out, DECISIONS)
    with fsio.open_atomic(decisions_url) as handle:
        pq.write_table(table, handle, compression="zstd")
    digest = table_digest(table)
    fsio.write_json(fsio.join(out, SUMMARY), {**summary, "digest": digest})
    invalidate_other_decisions(out, "neardup", digest)
    report = run_stage("neardup", WriteNeardupShard(decisions_url, digest), tasks, out, seed=seed)
    return report, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "neardup", help="near-duplicate clusters and eval decontamination"
    )
    parser.add_argument("--pool", required=True)
    parser.add_argument("--out", default=None, help="default: POOL/curation/neardup")
    parser.add_argument(
        "--scores", default=None, help="score stage folder (default: POOL/curation/score)"
    )
    defaults = NeardupConfig()
    parser.add_argument(
        "--threshold",
        type=float,
        default=defaults.threshold,
        help="cosine at or above which two pool images are near-duplicates",
    )
    parser.add_argument(
        "--eval-threshold",
        type=float,
        default=defaults.eval_threshold,
        help="cosine at or above which a pool image counts as an eval image",
    )
    parser.add_argument(
        "--pixel-threshold",
        type=float,
        default=defaults.pixel_threshold,
        help="pixel-signature cosine at or above which images match (>1: off)",
    )
    parser.add_argument(
        "--pixel-aspect-tolerance",
        type=float,
        default=defaults.pixel_aspect_tolerance,
        help="pixel matches need |log(aspect ratio a / b)| at most this",
    )
    parser.add_argument("--index", choices=("auto", "flat", "ivf", "hnsw"), default=defaults.index)
    parser.add_argument("--neighbours", type=int, default=defaults.neighbours)
    parser.add_argument(
        "--embeddings",
        choices=("auto", "on", "off"),
        default="auto",
        help="use CLIP embeddings as a signal (auto: not with a random-init scorer, "
        "whose embeddings put unrelated images above 0.99 cosine)",
    )
    parser.add_argument("--eval-sets", nargs="*", default=[], help="folders of eval images / tars")
    parser.add_argument("--world", default=None, help="mini Common Crawl folder: use WORLD/eval")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    out = args.out or fsio.join(args.pool, "curation", "neardup")
    score_dir = args.scores or fsio.join(args.pool, "curation", "score")
    eval_folders = list(args.eval_sets)
    if args.world:
        eval_folders.append(fsio.join(args.world, "eval"))
    config = NeardupConfig(
        args.threshold,
        args.eval_threshold,
        args.pixel_threshold,
        args.index,
        args.neighbours,
        {"auto": None, "on": True, "off": False}[args.embeddings],
        args.pixel_aspect_tolerance,
    )
    report, summary = run_neardup(args.pool, out, score_dir, config, eval_folders, args.seed)
    print(report.describe())
    print(
        f"neardup: {summary['samples']:,} samples, {summary['clusters']:,} clusters, "
        f"{summary['duplicates_removed']:,} duplicates removed, "
        f"{summary['contaminated_direct'] + summary['contaminated_via_cluster']:,} contaminated "
        f"(of {summary['eval_images']:,} eval images)"
    )
    if not summary["config"]["use_embeddings"]:
        print(
            "neardup: CLIP embeddings NOT used (the scorer has random weights or --embeddings off); "
            "sha256 and pixel signatures decide alone"
        )
    return 0 if report.ok else 1
