"""The NSFW head over pool shards: per-shard decisions, and labelled rows gathered for fitting.

Both read what the score stage left in its folder: raw/{shard}.parquet (uid, clip_score; NaN for
a sample it could not decode) and {shard}.emb.npy, the L2-normalised image embeddings
row-aligned with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation import fsio
from curation.nsfw.head import head_from_bytes
from curation.runner import ShardContext, ShardTask
from curation.score.reapply import DIGEST_KEY
from curation.score.shard_scoring import RAW_DIR, embeddings_name, raw_scores_name

UNSAFE = "nsfw_probability_at_or_above_threshold"
NO_EMBEDDING = "no_embedding"  # the scorer could not decode the image: nothing vouches for it
SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("nsfw_probability", pa.float32()),
        ("keep_nsfw", pa.bool_()),
        ("nsfw_reason", pa.string()),
    ]
)


def shard_embeddings(score_dir: str, shard_id: str) -> tuple[pa.Table, np.ndarray]:
    """(raw score rows, their embeddings) of one shard; a row with a NaN score has none."""
    raw_url = fsio.join(score_dir, raw_scores_name(shard_id))
    raw = fsio.read_parquet(raw_url, ["uid", "clip_score"])
    fs, path = fsio.filesystem(fsio.join(score_dir, embeddings_name(shard_id)))
    with fs.open(path, "rb") as handle:
        embeddings = np.load(handle)
    if len(embeddings) != raw.num_rows:
        raise ValueError(
            f"{raw_url}: {raw.num_rows} rows but {len(embeddings)} embeddings; re-run score"
        )
    return raw, embeddings


@dataclass(frozen=True)
class ApplyNsfwHead:
    """Write {shard}.parquet: uid, nsfw_probability, keep_nsfw, nsfw_reason (null when kept)."""

    score_dir: str
    weights: bytes  # the head's safetensors file (small; shipped with the task)
    threshold: float
    digest: str

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        head = head_from_bytes(self.weights)
        raw, embeddings = shard_embeddings(self.score_dir, task.shard_id)
        scored = np.isfinite(raw["clip_score"].to_numpy(zero_copy_only=False))
        probability = np.full(raw.num_rows, np.nan, dtype=np.float32)
        if scored.any():
            with ctx.stats.timer("head"):
                probability[scored] = head.probabilities(embeddings[scored])
        unsafe = scored & (probability >= self.threshold)
        reason = np.full(raw.num_rows, None, dtype=object)
        reason[~scored], reason[unsafe] = NO_EMBEDDING, UNSAFE
        keep = scored & ~unsafe
        ctx.stats.rows_in = raw.num_rows
        ctx.stats.rows_out = int(keep.sum())
        ctx.stats.drop(NO_EMBEDDING, int(np.count_nonzero(~scored)))
        ctx.stats.drop(UNSAFE, int(np.count_nonzero(unsafe)))
        ctx.stats.extra.update({DIGEST_KEY: self.digest, "threshold": self.threshold})
        table = pa.table(
            [raw["uid"], pa.array(probability), pa.array(keep), pa.array(reason, pa.string())],
            schema=SCHEMA,
        )
        ctx.write_parquet(f"{task.shard_id}.parquet", table)


def labelled_embeddings(score_dir: str, labels: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """(embeddings, unsafe labels) of the labelled uids the scorer embedded, in score-folder
    order, and how many labelled uids it did not (absent, or undecodable)."""
    wanted = dict(zip(labels["uid"].to_pylist(), labels["unsafe"].to_pylist()))
    rows: list[np.ndarray] = []
    found: list[bool] = []
    for raw_url in fsio.expand(fsio.join(score_dir, RAW_DIR, "*.parquet")):
        shard_id = raw_url.rsplit("/", 1)[-1][: -len(".parquet")]
        raw, embeddings = shard_embeddings(score_dir, shard_id)
        scores = raw["clip_score"].to_numpy(zero_copy_only=False)
        for i, uid in enumerate(raw["uid"].to_pylist()):
            if uid in wanted and np.isfinite(scores[i]):
                rows.append(embeddings[i])
                found.append(bool(wanted.pop(uid)))
    dim = rows[0].shape[0] if rows else 0
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return matrix, np.array(found, dtype=bool), len(wanted)


def read_labels(url: str) -> pa.Table:
    """A labels file: Parquet (or CSV) with columns uid and unsafe (bool or 0/1)."""
    if url.endswith(".csv"):
        from pyarrow import csv

        fs, path = fsio.filesystem(url)
        with fs.open(path, "rb") as handle:
            table = csv.read_csv(handle)
    else:
        table = fsio.read_parquet(url)
    missing = [c for c in ("uid", "unsafe") if c not in table.column_names]
    if missing:
        raise ValueError(f"{url}: no column(s) {', '.join(missing)} (expected uid, unsafe)")
    unsafe = table["unsafe"].cast(pa.bool_())
    return pa.table({"uid": table["uid"].cast(pa.string()), "unsafe": unsafe})
