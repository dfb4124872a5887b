"""The two per-shard passes of the score stage.

Pass 1 (`ScoreShard`, stage "score"): read a pool shard, decode and preprocess its JPEGs in the
shard task (CPU), send batches to the scoring actors (keeping `in_flight` batches queued so the
model never waits for decoding), and write the raw scores, the image embeddings ({shard}.emb.npy) and the pixel signatures
({shard}.pix.npy, see images.pixel_signature), both row-aligned with {shard}.parquet.
Pass 2 (`ApplyScoreDecision`, stage "score_filter"): after the driver fixed the global threshold,
write the contract file {shard}.parquet with keep_score.
Rows follow the sidecar's order of successful samples, so outputs do not depend on tar order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation import fsio
from curation.metaclip.balancing import uid_uniforms
from curation.runner import ShardContext, ShardTask
from curation.score.embedder import build_image_geometry, cosine_rows
from curation.score.filters import BasicRules, basic_rule_failures
from curation.score.images import SIGNATURE_DIM, ImageDecodeError, decode_rgb, pixel_signature
from curation.score.pool import iter_samples, read_sidecar
from curation.score.reapply import DIGEST_KEY

RAW_DIR = "raw"


def raw_scores_name(shard_id: str) -> str:
    return f"{RAW_DIR}/{shard_id}.parquet"


def embeddings_name(shard_id: str) -> str:
    return f"{shard_id}.emb.npy"


def signatures_name(shard_id: str) -> str:
    return f"{shard_id}.pix.npy"


def _submit(embedder: Any, pixels: np.ndarray, texts: list[str], model: int) -> Any:
    """Queue a batch on a Ray actor (returns a reference) or run it in-process (returns results)."""
    method = embedder.embed
    if hasattr(method, "remote"):
        return method.remote(pixels, texts, model)
    return method(pixels, texts, model)


CROSSFIT_SALT = "crossfit_fold"


def crossfit_folds(uids: list[str], folds: int, seed: int) -> np.ndarray:
    """Each uid's fold in 0..folds-1, a pure function of (seed, uid): which rows a cross-fit
    scorer must not train on, and which scorer embeds a row."""
    return (uid_uniforms(uids, seed, CROSSFIT_SALT) * folds).astype(np.int64)


class ScorerStartError(RuntimeError):
    """A scoring actor could not build its model (bad weights or config): no shard can be scored."""


def actor_start_error(exc: BaseException) -> ScorerStartError | None:
    """The concise error for a Ray actor that died in its constructor (its exception's last
    line, e.g. "ScorerConfigError: weights W do not fit model M ..."), or None for any other."""
    import ray

    if not isinstance(exc, ray.exceptions.ActorDiedError) or not exc.actor_init_failed:
        return None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "Error: " in line), None)
    if cause is None:
        cause = lines[-1] if lines else "unknown cause"
    else:  # "curation.score.model.ScorerConfigError: ..." -> "ScorerConfigError: ..."
        name, sep, message = cause.partition(": ")
        cause = name.rsplit(".", 1)[-1] + sep + message
    return ScorerStartError(f"the scoring actor could not build its model: {cause}")


def get_from_actors(pending: Any) -> Any:
    """`ray.get` of scoring-actor calls; an actor that died building its model raises
    ScorerStartError with the cause in one line, not Ray's traceback."""
    import ray

    try:
        return ray.get(pending)
    except ray.exceptions.ActorDiedError as exc:
        error = actor_start_error(exc)
        if error is None:
            raise
        raise error from None


def _result(pending: Any) -> tuple[np.ndarray, np.ndarray]:
    return pending if isinstance(pending, tuple) else get_from_actors(pending)


@dataclass(frozen=True)
class ScoreShard:
    embedders: tuple[Any, ...]  # Ray actor handles of ClipEmbedder, or ClipEmbedder objects
    preprocess_cfg: dict[str, Any]
    embed_dim: int
    batch_size: int = 64
    in_flight: int = 2
    folds: int = 1  # > 1: cross-fitting, a row of fold i embedded by model i (crossfit_folds)
    fold_seed: int = 0
    # An ensemble per fold: models i, i + folds, i + 2 * folds, ... all score fold i's rows and
    # a row's score is the mean of their cosines (its stored embedding is model i's).
    models_per_fold: int = 1

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        tar_url, sidecar_url = task.inputs
        rows = read_sidecar(sidecar_url, ["uid", "key", "text"])
        keys = rows["key"].to_pylist()
        texts = [t or "" for t in rows["text"].to_pylist()]
        position = {key: i for i, key in enumerate(keys)}
        n = len(keys)
        fold_of = (
            crossfit_folds(rows["uid"].to_pylist(), self.folds, self.fold_seed)
            if self.folds > 1
            else np.zeros(n, dtype=np.int64)
        )
        scores = np.full(n, np.nan, dtype=np.float32)
        signatures = np.zeros((n, SIGNATURE_DIM), dtype=np.float16)
        embeddings = np.zeros((n, self.embed_dim), dtype=np.float16)
        seen = np.zeros(n, dtype=bool)
        geometry = build_image_geometry(self.preprocess_cfg)
        min_side = int(self.preprocess_cfg["size"])
        ctx.stats.rows_in = n

        # One batch in the making per fold (one in all without cross-fitting).
        batch_rows: list[list[int]] = [[] for _ in range(self.folds)]
        batch_pixels: list[list[np.ndarray]] = [[] for _ in range(self.folds)]
        queue: deque[tuple[list[int], list[Any]]] = deque()
        turn = 0

        def collect_oldest() -> None:
            rows_of_batch, pendings = queue.popleft()
            cosines = []
            for member, pending in enumerate(pendings):
                with ctx.stats.timer("wait_for_model"):
                    image_features, text_features = _result(pending)
                cosines.append(cosine_rows(image_features, text_features))
                if member == 0:
                    embeddings[rows_of_batch] = image_features.astype(np.float16)
            scores[rows_of_batch] = np.mean(cosines, axis=0)

        def flush(fold: int) -> None:
            nonlocal turn
            if not batch_rows[fold]:
                return
            while len(queue) >= self.in_flight:
                collect_oldest()
            pixels, texts_of_batch = (
                np.stack(batch_pixels[fold]),
                [texts[i] for i in batch_rows[fold]],
            )
            pendings = []
            for member in range(self.models_per_fold):
                embedder = self.embedders[turn % len(self.embedders)]
                turn += 1
                model = fold + member * self.folds
                pendings.append(_submit(embedder, pixels, texts_of_batch, model))
            queue.append((batch_rows[fold], pendings))
            batch_rows[fold], batch_pixels[fold] = [], []

        for key, members in iter_samples(tar_url):
            row = position.get(key)
            where = f"{tar_url}:{key}"
            if row is None:
                ctx.stats.error(
                    "key_not_in_sidecar", where, "tar sample has no success row in the sidecar"
                )
                continue
            seen[row] = True
            if "jpg" not in members:
                ctx.stats.error("missing_jpg", where, "sample has no .jpg member")
                continue
            ctx.stats.bytes_in += len(members["jpg"])
            with ctx.stats.timer("decode"):
                try:
                    image = decode_rgb(members["jpg"], min_side=min_side)
                except ImageDecodeError as exc:
                    ctx.stats.error("undecodable_image", where, str(exc))
                    continue
                signatures[row] = pixel_signature(image)
                # uint8 [H, W, 3]; the embedder normalises the batch (embedder.model_input).
                fold = int(fold_of[row])
                batch_pixels[fold].append(np.asarray(geometry(image)))
            batch_rows[fold].append(row)
            if len(batch_rows[fold]) >= self.batch_size:
                flush(fold)
        for fold in range(self.folds):
            flush(fold)
        while queue:
            collect_oldest()
        for row in np.flatnonzero(~seen):
            ctx.stats.error(
                "missing_in_tar", f"{tar_url}:{keys[row]}", "sidecar success row has no tar sample"
            )

        unscored = int(np.count_nonzero(np.isnan(scores)))
        ctx.stats.drop("unscored", unscored)
        ctx.stats.rows_out = n - unscored
        finite = scores[np.isfinite(scores)]
        ctx.stats.extra.update(
            {
                "scored": int(finite.size),
                "score_mean": float(finite.mean()) if finite.size else None,
            }
        )
        table = pa.table(
            {"uid": rows["uid"], "key": rows["key"], "clip_score": pa.array(scores, pa.float32())}
        )
        ctx.write_parquet(raw_scores_name(task.shard_id), table)
        with ctx.open_output(embeddings_name(task.shard_id)) as handle:
            np.save(handle, embeddings)
        with ctx.open_output(signatures_name(task.shard_id)) as handle:
            np.save(handle, signatures)


@dataclass(frozen=True)
class ScoreDecision:
    """The global keep rule every shard applies: threshold (None = no score cut) + basic rules."""

    tag: str
    threshold: float | None
    basic: BasicRules | None
    digest: str


@dataclass(frozen=True)
class ApplyScoreDecision:
    decision: ScoreDecision
    score_dir: str

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        _tar_url, sidecar_url = task.inputs
        raw_url = fsio.join(self.score_dir, raw_scores_name(task.shard_id))
        raw = fsio.read_parquet(raw_url)
        scores = raw["clip_score"].to_numpy(zero_copy_only=False)
        ctx.stats.rows_in = raw.num_rows
        failures: dict[str, np.ndarray] = {"unscored": np.isnan(scores)}
        if self.decision.threshold is not None:
            with np.errstate(invalid="ignore"):
                failures["below_score_threshold"] = ~(scores >= self.decision.threshold)
        if self.decision.basic is not None:
            sidecar = read_sidecar(
                sidecar_url, ["uid", "text", "width", "height", "original_width", "original_height"]
            )
            if sidecar["uid"].to_pylist() != raw["uid"].to_pylist():
                raise ValueError(
                    f"{raw_url}: rows no longer match {sidecar_url}; re-run the score stage"
                )
            failures.update(basic_rule_failures(sidecar, self.decision.basic))
        keep = np.ones(raw.num_rows, dtype=bool)
        for reason, failed in failures.items():
            # Each dropped row is counted once, under the first rule it fails.
            ctx.stats.drop(reason, int(np.count_nonzero(failed & keep)))
            keep &= ~failed
        ctx.stats.rows_out = int(keep.sum())
        ctx.stats.extra[DIGEST_KEY] = self.decision.digest
        table = pa.table(
            {
                "uid": raw["uid"],
                f"clip_score_{self.decision.tag}": raw["clip_score"],
                "keep_score": pa.array(keep),
            }
        )
        ctx.write_parquet(f"{task.shard_id}.parquet", table)
