"""MetaCLIP balancing math: entry counts, sampling probabilities, seeded per-uid draws.

With count(e) the number of texts matching entry e over the whole pool, entry e is sampled with
p(e) = min(1, t / count(e)) and a text with matched entries E is kept with
P = 1 - prod_{e in E} (1 - p(e)). MetaCLIP draws one coin per matched entry; one uniform draw
against P has the same distribution and needs a single random number per text.

Every random number here is a hash of (run seed, purpose, uid), not a draw from a shard's stream:
the same text gets the same decision however the pool is sharded, re-sharded or re-run.
Counts are kept per group: the group is the text's language when MetaCLIP 2's per-language t is
used, and "" otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.runner import seeded_hashes

COUNTS_SCHEMA = pa.schema([("lang", pa.string()), ("entry", pa.int32()), ("count", pa.int64())])
NO_GROUP = ""


def uid_uniforms(uids: Sequence[object], seed: int, purpose: str) -> np.ndarray:
    """One uniform number in [0, 1) per uid, a pure function of (seed, purpose, uid)."""
    return (seeded_hashes(uids, seed, purpose) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def choose_texts(texts: pa.Array, uids: Sequence[object], seed: int) -> list[str | None]:
    """One text per row from a list<string> column, chosen by a uniform draw seeded per uid."""
    draws = uid_uniforms(uids, seed, "choose_text")
    chosen: list[str | None] = []
    for options, draw in zip(texts.to_pylist(), draws):
        options = [text for text in options or () if text is not None]
        chosen.append(options[int(draw * len(options))] if options else None)
    return chosen


def count_entries(entries: pa.ListArray, groups: np.ndarray, eligible: np.ndarray) -> pa.Table:
    """Sparse (lang, entry, count) over the eligible rows: how many texts match each entry."""
    row_of_match, entry_ids = _flatten(entries)
    keep = eligible[row_of_match]
    table = pa.table(
        {
            "lang": pa.array(groups[row_of_match][keep], pa.string()),
            "entry": pa.array(entry_ids[keep], pa.int32()),
            "count": pa.array(np.ones(int(keep.sum()), dtype=np.int64)),
        }
    )
    return sum_counts([table])


def sum_counts(tables: Sequence[pa.Table]) -> pa.Table:
    """Add up sparse count tables; rows sorted by (lang, entry)."""
    if not tables:
        return COUNTS_SCHEMA.empty_table()
    combined = pa.concat_tables([t.select(COUNTS_SCHEMA.names).cast(COUNTS_SCHEMA) for t in tables])
    summed = combined.group_by(["lang", "entry"]).aggregate([("count", "sum")])
    summed = summed.rename_columns(["lang", "entry", "count"]).cast(COUNTS_SCHEMA)
    return summed.sort_by([("lang", "ascending"), ("entry", "ascending")])


def entry_probabilities(
    counts: pa.Table, num_entries: int, t: float, t_per_lang: Mapping[str, float] | None = None
) -> dict[str, np.ndarray]:
    """Per group, p(e) = min(1, t_group / count(e)) over all entry ids (1 where count is 0)."""
    if t <= 0 or any(value <= 0 for value in (t_per_lang or {}).values()):
        raise ValueError(f"t must be positive, got t={t}, t_per_lang={t_per_lang}")
    probabilities: dict[str, np.ndarray] = {}
    langs = counts.column("lang").to_numpy(zero_copy_only=False)
    for group in np.unique(langs):
        rows = counts.filter(pc.equal(counts.column("lang"), group))
        group_t = (t_per_lang or {}).get(group, t)
        p = np.ones(num_entries, dtype=np.float64)
        entry_ids = rows.column("entry").to_numpy()
        p[entry_ids] = np.minimum(1.0, group_t / rows.column("count").to_numpy())
        probabilities[str(group)] = p
    return probabilities


def keep_probabilities(
    entries: pa.ListArray, groups: np.ndarray, probabilities: Mapping[str, np.ndarray]
) -> np.ndarray:
    """P = 1 - prod(1 - p(e)) per row, with p from the row's group (0 for rows matching nothing)."""
    row_of_match, entry_ids = _flatten(entries)
    p = np.ones(len(entry_ids), dtype=np.float64)  # an entry no count saw is never capped
    match_groups = groups[row_of_match]
    for group in np.unique(match_groups):
        in_group = match_groups == group
        if str(group) in probabilities:
            p[in_group] = probabilities[str(group)][entry_ids[in_group]]
    with np.errstate(divide="ignore"):
        log_miss = np.log1p(-p)  # -inf where p == 1: that entry alone keeps the text
    total = np.bincount(row_of_match, weights=log_miss, minlength=len(entries))
    return -np.expm1(total)


def _flatten(entries: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, entry id) for every matched entry of every row."""
    entries = entries.combine_chunks() if isinstance(entries, pa.ChunkedArray) else entries
    lengths = pc.fill_null(pc.list_value_length(entries), 0).to_numpy()
    row_of_match = np.repeat(np.arange(len(entries)), lengths)
    entry_ids = pc.list_flatten(entries).to_numpy(zero_copy_only=False).astype(np.int64)
    return row_of_match, entry_ids
