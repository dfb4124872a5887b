"""Stage `ingest-urls`: open URL lists (LAION, DataComp, any Parquet list) → candidates.

    python -m curation ingest-urls --format laion|datacomp|parquet --input LISTS... --out CANDIDATES

Writes CANDIDATES/{source}-{NNNNN}.parquet (one per list file, in sorted order; the list is saved
in CANDIDATES/_inputs/ingest_urls-{source}.json), so LAION, DataComp and the Common Crawl extract
can share one candidates folder and one global dedup.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq

from curation import fsio
from curation.download.plan import input_files
from curation.ingest.url_lists import FORMATS, UrlListFormat, generic_format, iter_candidate_batches
from curation.runner import ShardContext, ShardTask, StageReport, run_stage
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main

STAGE = "ingest_urls"


@dataclass(frozen=True)
class IngestUrlsConfig:
    inputs: Sequence[str]  # list Parquet files, folders or globs
    out: str  # candidates folder (may be shared with extract's)
    format: UrlListFormat  # FORMATS[name], or generic_format(...) for any Parquet list
    source: str  # the dataset the list comes from: the rows' source and the files' prefix

    def __post_init__(self) -> None:
        if not self.source or "/" in self.source:
            raise ConfigError(f"ingest-urls: --source must be a plain name, got {self.source!r}")


@dataclass(frozen=True)
class IngestUrlList:
    """One URL-list file → one candidates file."""

    fmt: UrlListFormat
    source: str

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        (list_url,) = task.inputs
        drops: Counter = Counter()
        writer = None
        with ctx.open_output(f"{task.shard_id}.parquet") as handle:
            for table in iter_candidate_batches(list_url, self.fmt, self.source, drops):
                if writer is None:
                    writer = pq.ParquetWriter(handle, table.schema, compression="zstd")
                writer.write_table(table)
                ctx.stats.rows_out += table.num_rows
            if writer is None:
                raise ValueError(f"{list_url}: the list has no rows")
            writer.close()
        for reason, count in drops.items():
            ctx.stats.drop(reason, count)
        ctx.stats.rows_in = ctx.stats.rows_out + sum(drops.values())


def url_list_tasks(config: IngestUrlsConfig) -> list[ShardTask]:
    """One task per list file; the numbering is saved so a re-run maps files to the same ids."""
    files = input_files(list(config.inputs))
    if not files:
        raise ConfigError(f"ingest-urls: no Parquet files match {' '.join(config.inputs)}")
    fsio.check_plan(
        fsio.join(config.out, "_inputs", f"{STAGE}-{config.source}.json"),
        {"inputs": files},
        f"source {config.source!r} in {config.out}",
    )
    return [ShardTask(f"{config.source}-{index:05d}", (url,)) for index, url in enumerate(files)]


def run(config: IngestUrlsConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    fsio.makedirs(config.out)
    report = run_stage(
        STAGE,
        IngestUrlList(config.format, config.source),
        url_list_tasks(config),
        config.out,
        **options.stage_args(),
    )
    return [report]


def config_from_args(args: argparse.Namespace) -> IngestUrlsConfig:
    if args.format != "parquet":
        fmt = FORMATS[args.format]
    elif not args.source:
        raise ConfigError("--format parquet needs --source NAME (the dataset the list comes from)")
    else:
        fmt = generic_format(
            args.url_col, args.text_col, args.width_col, args.height_col, tuple(args.keep)
        )
    return IngestUrlsConfig(tuple(args.input), args.out, fmt, args.source or args.format)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest-urls", help="LAION / DataComp / Parquet URL lists -> candidates"
    )
    parser.add_argument("--format", required=True, choices=[*FORMATS, "parquet"])
    parser.add_argument(
        "--input", nargs="+", required=True, help="list Parquet files, folders or globs"
    )
    parser.add_argument(
        "--out", required=True, help="candidates folder (may be shared with extract's)"
    )
    parser.add_argument("--source", help="source name in the rows (default: the format)")
    parser.add_argument("--url-col", default="url", help="--format parquet: the URL column")
    parser.add_argument("--text-col", default="text", help="--format parquet: the caption column")
    parser.add_argument("--width-col", help="--format parquet: original width column")
    parser.add_argument("--height-col", help="--format parquet: original height column")
    parser.add_argument(
        "--keep", nargs="*", default=[], help="--format parquet: columns carried along"
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
