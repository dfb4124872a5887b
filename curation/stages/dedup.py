"""Stage `dedup`: candidate pairs from every file → one row per image URL, by hash partitioning.

    python -m curation dedup --input RUN/candidates --out RUN/dedup [--buckets 16] [--max-texts 8]

No process ever holds all URLs. Pass 1 (`dedup_partition`, one task per candidate file) splits each
file's rows by a hash of the URL into N bucket files, OUT/_partitions/BUCKET/FILE.parquet. The
driver then collects, per bucket, the partition files pass 1 reported. Pass 2 (`dedup`, one task
per bucket) merges a bucket's rows and writes OUT/BUCKET.parquet: per URL its distinct texts, most
frequent first (ties: first seen in (warc_path, warc_offset) order), capped at --max-texts, their
sources, the first few page URLs and how many distinct pages showed it. Both passes go through the
runner, so a killed dedup resumes where it stopped and ends with the same files.
"""

from __future__ import annotations

import argparse
import posixpath
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.cc.candidates import CANDIDATE_SCHEMA, pair_uid
from curation.runner import ShardContext, ShardTask, StageReport, run_stage, stable_bucket
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stats import read_stage_records, stats_dir

PARTITION_STAGE = "dedup_partition"
MERGE_STAGE = "dedup"
PARTITIONS_DIR = "_partitions"
DEFAULT_BUCKETS = 16
DEFAULT_MAX_TEXTS = 8
MAX_PAGE_URLS = 5
# Within one candidate file rows are in page order; this column keeps that order across the shuffle.
ROW_COLUMN = "row_in_file"

DEDUP_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("texts", pa.list_(pa.string())),
        ("text_sources", pa.list_(pa.string())),
        ("page_urls", pa.list_(pa.string())),
        ("num_pages", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("lang", pa.string()),
        ("source", pa.string()),
        ("sources", pa.list_(pa.string())),  # every source that listed the URL, first-seen order
    ]
)


def bucket_id(bucket: int) -> str:
    return f"{bucket:05d}"


@dataclass(frozen=True)
class PartitionStage:
    """Pass 1: split one candidate file into per-bucket files."""

    buckets: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        (url,) = task.inputs
        table = _read_candidates(url)
        ctx.stats.rows_in = ctx.stats.rows_out = table.num_rows
        table = table.append_column(ROW_COLUMN, pa.array(range(table.num_rows), pa.int64()))
        assignment = pa.array(
            [stable_bucket(u, self.buckets) for u in table.column("url").to_pylist()], pa.int32()
        )
        for bucket in sorted(set(assignment.to_pylist())):
            part = table.filter(pc.equal(assignment, bucket))
            ctx.write_parquet(
                posixpath.join(PARTITIONS_DIR, bucket_id(bucket), f"{task.shard_id}.parquet"), part
            )


def _read_candidates(url: str) -> pa.Table:
    table = fsio.read_parquet(url)
    missing = [name for name in CANDIDATE_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{url}: not a candidates file (missing columns {missing})")
    return table.select(CANDIDATE_SCHEMA.names).cast(CANDIDATE_SCHEMA)


@dataclass(frozen=True)
class MergeStage:
    """Pass 2: one bucket's partition files → one row per URL."""

    max_texts: int = DEFAULT_MAX_TEXTS

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        parts = [fsio.read_parquet(url) for url in task.inputs]
        table = pa.concat_tables(parts) if parts else _empty_partition()
        table = table.sort_by(
            [
                ("url", "ascending"),
                ("warc_path", "ascending"),
                ("warc_offset", "ascending"),
                (ROW_COLUMN, "ascending"),
            ]
        )
        rows = merge_sorted_occurrences(table, self.max_texts)
        ctx.stats.rows_in = table.num_rows
        ctx.stats.rows_out = len(rows["url"])
        if table.num_rows > len(rows["url"]):
            ctx.stats.drop("duplicate_url", table.num_rows - len(rows["url"]))
        ctx.stats.extra.update(
            {
                "urls": len(rows["url"]),
                "urls_with_capped_texts": rows.pop("_capped"),
                "distinct_pairs": rows.pop("_distinct_pairs"),
            }
        )
        ctx.write_parquet(f"{task.shard_id}.parquet", pa.table(rows, schema=DEDUP_SCHEMA))


def _empty_partition() -> pa.Table:
    return CANDIDATE_SCHEMA.append(pa.field(ROW_COLUMN, pa.int64())).empty_table()


def merge_sorted_occurrences(table: pa.Table, max_texts: int) -> dict[str, Any]:
    """Group rows sorted by (url, first-seen order) into the dedup rows (column lists)."""
    urls = table.column("url").to_pylist()
    texts = table.column("text").to_pylist()
    sources = table.column("text_source").to_pylist()
    pages = table.column("page_url").to_pylist()
    widths = table.column("width").to_pylist()
    heights = table.column("height").to_pylist()
    langs = table.column("lang").to_pylist()
    origin = table.column("source").to_pylist()
    out: dict[str, Any] = {name: [] for name in DEDUP_SCHEMA.names}
    capped = distinct_pairs = 0
    start = 0
    while start < len(urls):
        end = start
        while end < len(urls) and urls[end] == urls[start]:
            end += 1
        # text -> [occurrences, first row]; dict order is first-seen order.
        seen_texts: dict[str, list[int]] = {}
        page_list: list[str] = []
        page_set: set[str] = set()
        for row in range(start, end):
            entry = seen_texts.get(texts[row])
            if entry is None:
                seen_texts[texts[row]] = [1, row]
            else:
                entry[0] += 1
            if pages[row] not in page_set:
                page_set.add(pages[row])
                page_list.append(pages[row])
        ranked = sorted(seen_texts.items(), key=lambda item: (-item[1][0], item[1][1]))
        kept = ranked[:max_texts]
        capped += len(ranked) > max_texts
        distinct_pairs += len(ranked)
        representative, (_, first_row) = kept[0]
        url = urls[start]
        out["uid"].append(pair_uid(url, representative))
        out["url"].append(url)
        out["text"].append(representative)
        out["texts"].append([text for text, _ in kept])
        out["text_sources"].append([sources[row] for _, (_, row) in kept])
        out["page_urls"].append(page_list[:MAX_PAGE_URLS])
        out["num_pages"].append(len(page_list))
        out["width"].append(_first_present(widths, start, end))
        out["height"].append(_first_present(heights, start, end))
        out["lang"].append(langs[first_row] or _first_present(langs, start, end))
        out["source"].append(origin[first_row])
        out["sources"].append(list(dict.fromkeys(origin[start:end])))
        start = end
    out["_capped"] = capped
    out["_distinct_pairs"] = distinct_pairs
    return out


def _first_present(values: list, start: int, end: int) -> Any:
    return next((values[row] for row in range(start, end) if values[row] is not None), None)


def candidate_files(input_dir: str) -> list[str]:
    files = fsio.expand(fsio.join(input_dir, "*.parquet"))
    if not files:
        raise ConfigError(f"dedup: no candidate files (*.parquet) in {input_dir}")
    return files


@dataclass(frozen=True)
class DedupConfig:
    input: str  # folder of candidate *.parquet files
    out: str  # folder for {bucket}.parquet
    buckets: int = DEFAULT_BUCKETS  # hash partitions (each must fit in one worker's memory)
    max_texts: int = DEFAULT_MAX_TEXTS  # distinct texts kept per URL

    def __post_init__(self) -> None:
        if self.buckets < 1 or self.max_texts < 1:
            raise ConfigError("dedup: --buckets and --max-texts must be at least 1")


def run(config: DedupConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    """Both passes; the merge pass runs only if every partition task succeeded."""
    files = candidate_files(config.input)
    stems = [posixpath.basename(f)[: -len(".parquet")] for f in files]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"dedup: candidate file names in {config.input} are not unique")
    fsio.makedirs(config.out)
    fsio.check_plan(
        fsio.join(config.out, "_inputs", f"{MERGE_STAGE}.json"),
        {"inputs": files, "buckets": config.buckets},
        f"dedup folder {config.out}",
    )
    passes = options.stage_args()
    partition_tasks = [ShardTask(stem, (f,)) for stem, f in zip(stems, files)]
    first = run_stage(
        PARTITION_STAGE, PartitionStage(config.buckets), partition_tasks, config.out, **passes
    )
    if not first.ok:
        first.notes.append(
            f"{MERGE_STAGE}: not started, pass 1 has failed shards (re-run to retry them)"
        )
        return [first]
    merge_tasks = bucket_tasks(config.out, config.buckets)
    second = run_stage(MERGE_STAGE, MergeStage(config.max_texts), merge_tasks, config.out, **passes)
    if second.ok:
        records = [r for r in read_stage_records(config.out, MERGE_STAGE) if not r["folder"]]
        second.summary.update(
            candidate_rows=sum(r["rows_in"] for r in records),
            urls=sum(r["rows_out"] for r in records),
            urls_with_capped_texts=sum(r["extra"]["urls_with_capped_texts"] for r in records),
        )
        second.notes.append(
            f"dedup: {second.summary['candidate_rows']:,} candidate rows -> "
            f"{second.summary['urls']:,} URLs"
        )
    return [first, second]


def bucket_tasks(out_dir: str, buckets: int) -> list[ShardTask]:
    """The reduce between the passes: each bucket's partition files, from pass 1's records."""
    by_bucket: dict[str, list[str]] = {bucket_id(b): [] for b in range(buckets)}
    records_dir = stats_dir(out_dir, PARTITION_STAGE)
    for record_url in fsio.expand(fsio.join(records_dir, "*.json")):
        for output in fsio.read_json(record_url, expect=dict)["outputs"]:
            bucket = output.split("/")[1]
            by_bucket[bucket].append(fsio.join(out_dir, output))
    return [ShardTask(bucket, tuple(sorted(files))) for bucket, files in by_bucket.items()]


def config_from_args(args: argparse.Namespace) -> DedupConfig:
    return DedupConfig(args.input, args.out, args.buckets, args.max_texts)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        MERGE_STAGE, help="deduplicate candidates: one row per image URL (hash-partitioned)"
    )
    parser.add_argument("--input", required=True, help="folder of candidate *.parquet files")
    parser.add_argument("--out", required=True, help="output folder for {bucket}.parquet")
    parser.add_argument(
        "--buckets",
        type=int,
        default=DEFAULT_BUCKETS,
        help="hash partitions (each must fit in one worker's memory)",
    )
    parser.add_argument(
        "--max-texts", type=int, default=DEFAULT_MAX_TEXTS, help="distinct texts kept per URL"
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
