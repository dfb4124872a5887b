"""The shard functions of a debias run: count (pass 1) and sample (pass 2).

`curation.stages.debias` drives them; see its docstring for the data flow and output layout.
Counts use balance's sparse (lang, entry, count) schema with the label in `lang`: per label and
concept the attributed rows (value labels only), and per label its total rows (entry -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.debias.planner import TOTAL_ENTRY
from curation.debias.pool_rows import shard_rows
from curation.debias.terms import AttributeDetector, load_terms
from curation.metaclip.balancing import COUNTS_SCHEMA, sum_counts, uid_uniforms
from curation.metaclip.passes import MATCH_BATCH_ROWS, cached_matcher
from curation.runner import ShardContext, ShardTask

STAGE, COUNT_STAGE = "debias", "debias_count"
_detector_cache: dict[str, AttributeDetector] = {}


def cached_detector(terms_url: str) -> AttributeDetector:
    if terms_url not in _detector_cache:
        _detector_cache.clear()
        _detector_cache[terms_url] = AttributeDetector(load_terms(terms_url))
    return _detector_cache[terms_url]


def label_counts(
    labels: Sequence[str], entries: pa.ListArray, mask: np.ndarray, values: Sequence[str]
) -> pa.Table:
    """Sparse counts over the masked rows: (label, concept) for value labels, (label, -1) for all."""
    labels_array = np.asarray(labels, dtype=object)
    lengths = pc.fill_null(pc.list_value_length(entries), 0).to_numpy()
    row_of_match = np.repeat(np.arange(len(labels_array)), lengths)
    concept = pc.list_flatten(entries).to_numpy(zero_copy_only=False).astype(np.int64)
    is_value = np.isin(labels_array, list(values))
    take = (mask & is_value)[row_of_match]
    table = pa.table(
        {
            "lang": pa.array(
                list(labels_array[row_of_match][take]) + list(labels_array[mask]), pa.string()
            ),
            "entry": pa.array(
                np.concatenate([concept[take], np.full(int(mask.sum()), TOTAL_ENTRY)]), pa.int32()
            ),
            "count": pa.array(np.ones(int(take.sum() + mask.sum()), dtype=np.int64)),
        },
        schema=COUNTS_SCHEMA,
    )
    return sum_counts([table])


@dataclass(frozen=True)
class CountAttributes:
    """Pass 1: label and match the shard's eligible captions; write their sparse counts."""

    pool: str
    after: tuple[str, ...]
    terms_url: str
    metadata_spec: str
    fingerprint: str

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        _tar, sidecar = task.inputs
        rows, eligible = shard_rows(self.pool, task.shard_id, sidecar, ["text"], self.after)
        texts = rows["text"].to_pylist()
        detector = cached_detector(self.terms_url)
        matcher = cached_matcher(self.metadata_spec, self.fingerprint)
        with ctx.stats.timer("match"):
            labels = detector.labels(texts)
            entries = pa.concat_arrays(
                [
                    matcher.match_batch(texts[start : start + MATCH_BATCH_ROWS])
                    for start in range(0, max(len(texts), 1), MATCH_BATCH_ROWS)
                ]
            )[: len(texts)]
        ctx.write_parquet(
            f"_matches/{task.shard_id}.parquet",
            pa.table(
                {
                    "uid": rows["uid"],
                    "label": pa.array(labels, pa.string()),
                    "entries": entries,
                    "eligible": pa.array(eligible),
                }
            ),
        )
        values = detector.terms.names
        ctx.write_parquet(
            f"_counts/{task.shard_id}.parquet", label_counts(labels, entries, eligible, values)
        )
        ctx.stats.rows_in, ctx.stats.rows_out = rows.num_rows, int(eligible.sum())
        if (~eligible).any():
            ctx.stats.drop("removed_by_after", int((~eligible).sum()))


@dataclass(frozen=True)
class SampleAttributes:
    """Pass 2: keep each attributed row with its cell's keep fraction, by a draw seeded per uid."""

    values: tuple[str, ...]
    concepts: np.ndarray = field(hash=False)  # sorted constrained concept ids
    keep: np.ndarray = field(hash=False)  # (values, concepts + 1) keep fractions
    seed: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        matches = fsio.read_parquet(fsio.join(ctx.out_dir, "_matches", f"{task.shard_id}.parquet"))
        labels = matches["label"].to_pylist()
        entries = matches["entries"].combine_chunks()
        eligible = matches["eligible"].to_numpy(zero_copy_only=False)
        probability = self.keep_probabilities(labels, entries)
        draws = uid_uniforms(matches["uid"].to_pylist(), self.seed, STAGE)
        keep = eligible & (draws < probability)
        attribute = pa.array([label if label in self.values else None for label in labels])
        ctx.write_parquet(
            f"{task.shard_id}.parquet",
            pa.table(
                {"uid": matches["uid"], "sensitive_attribute": attribute, "keep_debias": keep}
            ),
        )
        ctx.write_parquet(
            f"_kept/{task.shard_id}.parquet", label_counts(labels, entries, keep, self.values)
        )
        ctx.stats.rows_in, ctx.stats.rows_out = int(eligible.sum()), int(keep.sum())
        if (eligible & ~keep).any():
            ctx.stats.drop("resampled_out", int((eligible & ~keep).sum()))
        ctx.stats.extra.update(eligible=int(eligible.sum()), kept=int(keep.sum()))

    def keep_probabilities(self, labels: list[str], entries: pa.ListArray) -> np.ndarray:
        """1 for unattributed rows; else the smallest keep fraction of the row's constrained
        concepts, or its value's "rest" fraction when it names none."""
        index = {value: i for i, value in enumerate(self.values)}
        value_of = np.array([index.get(label, -1) for label in labels], dtype=np.int64)
        attributed = value_of >= 0
        probability = np.ones(len(labels))
        probability[attributed] = self.keep[value_of[attributed], self.keep.shape[1] - 1]
        lengths = pc.fill_null(pc.list_value_length(entries), 0).to_numpy()
        row_of_match = np.repeat(np.arange(len(labels)), lengths)
        concept = pc.list_flatten(entries).to_numpy(zero_copy_only=False).astype(np.int64)
        column = np.searchsorted(self.concepts, concept)
        found = column < len(self.concepts)
        found[found] = self.concepts[column[found]] == concept[found]
        found &= attributed[row_of_match]
        rows, columns = row_of_match[found], column[found]
        smallest = np.full(len(labels), np.inf)
        np.minimum.at(smallest, rows, self.keep[value_of[rows], columns])
        return np.where(np.isfinite(smallest), smallest, probability)
