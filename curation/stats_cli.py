"""`python -m curation stats RUN`: every stage's shard records merged into one table."""

from __future__ import annotations

import argparse

import pyarrow.parquet as pq

from curation import fsio
from curation.stats import format_summary, read_stage_records, summarize


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stats", help="merge per-shard stage statistics into one table")
    parser.add_argument("run", help="run folder (any fsspec URL) holding stage outputs")
    parser.add_argument("--stage", default=None, help="only this stage")
    parser.add_argument("--out", default=None, help="also write the table as Parquet here")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    records = read_stage_records(args.run, args.stage)
    if not records:
        print(f"no stage statistics under {args.run}")
        return 1
    table = summarize(records)
    print(format_summary(table))
    if args.out:
        with fsio.open_atomic(args.out) as handle:
            pq.write_table(table, handle)
    return 0
