"""The shard functions of a balance run: match (pass 1), reduce counts, sample (pass 2).

`curation.stages.balance` drives them; see its docstring for the data flow and output layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import fsio
from curation.metaclip import balancing
from curation.metaclip.matching import EntryMatcher
from curation.metaclip.metadata import load_metadata
from curation.runner import ShardContext, ShardTask

MATCH_BATCH_ROWS = 20_000
_matcher_cache: dict[str, EntryMatcher] = {}


def metadata_fingerprint(entries: list[str]) -> str:
    return hashlib.blake2b(
        "\n".join(entries).encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()


def cached_matcher(spec: str, fingerprint: str) -> EntryMatcher:
    """The metadata's automaton, built once per worker process (it takes seconds at 500k)."""
    if fingerprint not in _matcher_cache:
        entries = load_metadata(spec)
        if metadata_fingerprint(entries) != fingerprint:
            raise RuntimeError(f"metadata {spec} changed while the balance run was going on")
        _matcher_cache.clear()
        _matcher_cache[fingerprint] = EntryMatcher(entries)
    return _matcher_cache[fingerprint]


@dataclass(frozen=True)
class TextColumns:
    """Which input columns hold the text(s), the language, and the download status."""

    text: str = "text"
    texts: str | None = None  # a list<string> column: one text chosen per uid
    lang: str | None = None  # only read with per-language t

    def needed(self, schema: pa.Schema, url: str) -> list[str]:
        wanted = ["uid", self.texts or self.text] + ([self.lang] if self.lang else [])
        missing = [name for name in wanted if name not in schema.names]
        if missing:
            raise ValueError(
                f"{url}: no column {', '.join(missing)} (has {', '.join(schema.names)})"
            )
        text_types = (pa.string(), pa.large_string())
        if self.texts and schema.field(self.texts).type not in [pa.list_(t) for t in text_types]:
            raise ValueError(
                f"{url}: column {self.texts} is {schema.field(self.texts).type}, "
                "not a list of strings"
            )
        optional = [name for name in (self.text, "status") if name in schema.names]
        if self.text in optional and schema.field(self.text).type not in text_types:
            raise ValueError(
                f"{url}: column {self.text} is {schema.field(self.text).type}, not a string"
            )
        return list(dict.fromkeys(wanted + optional))


@dataclass(frozen=True)
class MatchShard:
    """Pass 1: match one input file, write its matches and its sparse entry counts."""

    metadata_spec: str
    fingerprint: str
    columns: TextColumns
    seed: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        url = task.inputs[0]
        fs, path = fsio.filesystem(url)
        schema = pq.read_schema(path, filesystem=fs)
        table = fsio.read_parquet(url, self.columns.needed(schema, url))
        ctx.stats.rows_in = ctx.stats.rows_out = table.num_rows
        ctx.stats.bytes_in = fs.size(path)
        uids = table.column("uid").to_pylist()
        for row, uid in enumerate(uids):
            if uid is None:
                ctx.stats.error("missing_uid", f"{url} row {row}", "uid is null: never kept")
        downloaded = np.ones(table.num_rows, dtype=bool)
        if "status" in table.column_names:
            downloaded = np.asarray(table.column("status").to_pylist(), dtype=object) == "success"
        eligible = downloaded & np.array([uid is not None for uid in uids], dtype=bool)
        texts = self._texts(table, uids)
        matcher = cached_matcher(self.metadata_spec, self.fingerprint)
        with ctx.stats.timer("match"):
            matched = pa.concat_arrays(
                [
                    matcher.match_batch(texts[start : start + MATCH_BATCH_ROWS])
                    for start in range(0, max(len(texts), 1), MATCH_BATCH_ROWS)
                ]
            )[: table.num_rows]
        groups = self._groups(table)
        result = {
            "uid": table.column("uid"),
            "metaclip_entries": matched,
            "group": pa.array(groups, pa.string()),
            "downloaded": pa.array(downloaded),
            "has_text": pa.array([bool(text) for text in texts]),
        }
        if self.columns.texts:
            result["metaclip_text"] = pa.array(texts, pa.string())
        ctx.write_parquet(f"_matches/{task.shard_id}.parquet", pa.table(result))
        ctx.write_parquet(
            f"_counts/{task.shard_id}.parquet", balancing.count_entries(matched, groups, eligible)
        )
        lengths = np.asarray(pc.list_value_length(matched).to_numpy(zero_copy_only=False))
        match_seconds = ctx.stats.timings["match"]
        ctx.stats.extra.update(
            {
                "eligible": int(eligible.sum()),
                "matched": int(((lengths > 0) & eligible).sum()),
                "matches": int(lengths[eligible].sum()),
                "texts_per_second": len(texts) / match_seconds if match_seconds else None,
            }
        )

    def _texts(self, table: pa.Table, uids: list[object]) -> list[str | None]:
        if not self.columns.texts:
            return table.column(self.columns.text).to_pylist()
        chosen = balancing.choose_texts(
            table.column(self.columns.texts).combine_chunks(), uids, self.seed
        )
        if self.columns.text in table.column_names:  # an empty list falls back to the text
            fallback = table.column(self.columns.text).to_pylist()
            chosen = [text if text is not None else alt for text, alt in zip(chosen, fallback)]
        return chosen

    def _groups(self, table: pa.Table) -> np.ndarray:
        if not self.columns.lang:
            return np.full(table.num_rows, balancing.NO_GROUP, dtype=object)
        langs = table.column(self.columns.lang).to_pylist()
        return np.array([lang or balancing.NO_GROUP for lang in langs], dtype=object)


@dataclass(frozen=True)
class ReduceCounts:
    """Sum a group of sparse count files into one (a level of the tree reduce)."""

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        tables = [fsio.read_parquet(url) for url in task.inputs]
        ctx.stats.rows_in = sum(t.num_rows for t in tables)
        summed = balancing.sum_counts(tables)
        ctx.stats.rows_out = summed.num_rows
        ctx.write_parquet(f"{task.shard_id}.parquet", summed)


@dataclass(frozen=True)
class SampleShard:
    """Pass 2: decide keep per row from the stored matches and the global probabilities."""

    probabilities: Mapping[str, np.ndarray] = field(hash=False)
    seed: int
    pool: bool
    matches_dir: str

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        matches = fsio.read_parquet(fsio.join(self.matches_dir, f"{task.shard_id}.parquet"))
        entries = matches.column("metaclip_entries").combine_chunks()
        groups = np.asarray(matches.column("group").to_pylist(), dtype=object)
        downloaded = matches.column("downloaded").to_numpy(zero_copy_only=False)
        has_uid = matches.column("uid").is_valid().to_numpy(zero_copy_only=False)
        eligible = downloaded & has_uid
        has_text = matches.column("has_text").to_numpy(zero_copy_only=False)
        uids = matches.column("uid").to_pylist()
        keep_p = balancing.keep_probabilities(entries, groups, self.probabilities)
        draws = balancing.uid_uniforms(uids, self.seed, "keep")
        keep = eligible & (draws < keep_p)
        self._count(ctx, downloaded, has_uid, has_text, keep_p, keep)
        ctx.write_parquet(
            f"_kept/{task.shard_id}.parquet", balancing.count_entries(entries, groups, keep)
        )
        if self.pool:
            columns = {
                "uid": matches.column("uid"),
                "metaclip_entries": entries,
                "keep_balance": pa.array(keep),
            }
            if "metaclip_text" in matches.column_names:
                columns["metaclip_text"] = matches.column("metaclip_text")
            ctx.write_parquet(f"{task.shard_id}.parquet", pa.table(columns))
            return
        rows = fsio.read_parquet(task.inputs[0])
        if rows.num_rows != matches.num_rows:
            raise RuntimeError(
                f"{task.inputs[0]} has {rows.num_rows} rows but its matches "
                f"{matches.num_rows}: the input changed since pass 1"
            )
        rows = rows.append_column("metaclip_entries", entries)
        if "metaclip_text" in matches.column_names:
            rows = rows.append_column("metaclip_text", matches.column("metaclip_text"))
        ctx.write_parquet(f"{task.shard_id}.parquet", rows.append_column("keep", pa.array(keep)))

    @staticmethod
    def _count(
        ctx: ShardContext,
        downloaded: np.ndarray,
        has_uid: np.ndarray,
        has_text: np.ndarray,
        keep_p: np.ndarray,
        keep: np.ndarray,
    ) -> None:
        n = len(downloaded)
        ctx.stats.rows_in, ctx.stats.rows_out = n, int(keep.sum())
        eligible = downloaded & has_uid
        matched = eligible & (keep_p > 0)
        for reason, count in (
            ("not_downloaded", int((~downloaded).sum())),
            ("missing_uid", int((downloaded & ~has_uid).sum())),
            ("no_text", int((eligible & ~has_text & ~matched).sum())),
            ("no_entry", int((eligible & has_text & ~matched).sum())),
            ("balanced_out", int((matched & ~keep).sum())),
        ):
            if count:
                ctx.stats.drop(reason, count)
        ctx.stats.extra.update(
            {
                "eligible": int(eligible.sum()),
                "matched": int(matched.sum()),
                "kept": int(keep.sum()),
                "kept_fraction": float(keep.sum() / eligible.sum()) if eligible.any() else 0.0,
                "expected_kept": float(keep_p[eligible].sum()),
            }
        )
