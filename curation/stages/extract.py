"""Stage `extract`: Common Crawl WARC/WAT files → candidate image-text pairs, one shard per file.

    python -m curation extract --snapshot CC-MAIN-2024-10 [--cc-root URL] --out RUN/candidates
    python -m curation extract --input 'crawl/*.warc.gz' --out RUN/candidates

Shard ids are the file's index in the input list ("00000", "00001", ...). The list is saved as
OUT/_inputs/extract.json, so a re-run (after a crash, or with another --max-files) maps every file
to the same shard; a re-run whose list is not a prefix of the saved one (or the other way round) is
refused rather than silently mixing two extractions in one folder.

Bad input: a damaged record is skipped and counted (the file's good records are kept, and the
report names the file); a file with no readable record at all fails its shard into
OUT/_errors/extract/, so a re-run retries it; a page is cut before parsing at 1 MiB and at a
nesting depth the parser cannot afford (curation/cc/html_limits.py), and counted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from curation import fsio
from curation.cc.extractor import extract_file, infer_format
from curation.cc.html_images import DEFAULT_HTML_PARSER, HTML_PARSERS
from curation.cc.snapshot import FORMATS, list_snapshot_files
from curation.cc.text_filters import TextFilters
from curation.cc.warc_reader import PUBLIC_CC_BUCKET
from curation.runner import ShardContext, ShardTask, StageReport, run_stage
from curation.stages.common import (
    ConfigError,
    RunOptions,
    add_run_options,
    cli_main,
)

STAGE = "extract"
SHARD_ID_DIGITS = 5
# The report names at most this many files with damaged records (each shard's record has them all).
MAX_DAMAGED_FILES_LISTED = 5


@dataclass(frozen=True)
class ExtractConfig:
    """Which files to extract (fsspec URLs, in shard order), where to, and how."""

    inputs: tuple[str, ...]
    out: str
    file_format: str | None = None  # None: per file, from its name (…wat.gz → wat)
    filters: TextFilters = field(default_factory=TextFilters)
    html_parser: str = DEFAULT_HTML_PARSER  # "scan" or "lexbor" (same output but <frameset>)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("extract: no input files")
        if len(set(self.inputs)) != len(self.inputs):
            raise ConfigError("extract: the input list names a file more than once")
        if self.file_format is not None and self.file_format not in FORMATS:
            raise ConfigError(f"extract: unknown format {self.file_format!r}; expected {FORMATS}")
        if self.html_parser not in HTML_PARSERS:
            raise ConfigError(
                f"extract: unknown HTML parser {self.html_parser!r}; expected {HTML_PARSERS}"
            )


@dataclass(frozen=True)
class ExtractStage:
    """Extract the candidates of one WARC/WAT file into OUT/{shard}.parquet."""

    file_format: str | None = None  # None: per file, from its name (…wat.gz → wat)
    filters: TextFilters = field(default_factory=TextFilters)
    html_parser: str = DEFAULT_HTML_PARSER

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        (url,) = task.inputs
        file_format = self.file_format or infer_format(url)
        table = extract_file(url, file_format, self.filters, ctx.stats, self.html_parser)
        ctx.write_parquet(f"{task.shard_id}.parquet", table)


def inputs_manifest_url(out_dir: str) -> str:
    return fsio.join(out_dir, "_inputs", f"{STAGE}.json")


def plan_tasks(inputs: list[str], out_dir: str) -> list[ShardTask]:
    """One task per input file with a stable shard id; records the list in the output folder.

    A re-run may extend the list (a larger --max-files) but not change what is already there."""
    manifest = inputs_manifest_url(out_dir)
    previous = fsio.read_json(manifest, expect=dict)["inputs"] if fsio.exists(manifest) else []
    shorter, longer = sorted((previous, inputs), key=len)
    if longer[: len(shorter)] != shorter:
        raise fsio.PlanMismatchError(
            f"extract: {out_dir} already holds an extraction of a different input list "
            f"({len(previous)} files, see {manifest}); use a new --out folder"
        )
    if len(inputs) > len(previous):
        fsio.write_json(manifest, {"inputs": inputs})
    digits = max(SHARD_ID_DIGITS, len(str(len(inputs) - 1)))
    return [ShardTask(f"{index:0{digits}d}", (url,)) for index, url in enumerate(inputs)]


def run(config: ExtractConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    """Extract every input file into `config.out` (resumable: finished shards are skipped)."""
    tasks = plan_tasks(list(config.inputs), config.out)
    stage = ExtractStage(
        file_format=config.file_format, filters=config.filters, html_parser=config.html_parser
    )
    report = run_stage(
        STAGE,
        stage,
        tasks,
        config.out,
        num_cpus=1,
        **options.stage_args(),
    )
    report.summary = summarize(report)
    report.notes.extend(damage_notes(report))
    return [report]


def summarize(report: StageReport) -> dict[str, int]:
    """This run's totals over the shards it completed."""
    totals = {"records": 0, "pairs": 0, "damaged_files": 0, "cut_pages": 0}
    for record in report.completed:
        extra = record.get("extra", {})
        totals["records"] += extra.get("records", 0)
        totals["pairs"] += extra.get("pairs", 0)
        totals["cut_pages"] += sum(extra.get("cut_pages", {}).values())
        totals["damaged_files"] += bool(record.get("errors"))
    return totals


def damage_notes(report: StageReport) -> list[str]:
    """One line per file that was read only in part (its good records were kept)."""
    damaged = [record for record in report.completed if record.get("errors")]
    lines = []
    for record in damaged[:MAX_DAMAGED_FILES_LISTED]:
        errors = ", ".join(f"{kind} {n}" for kind, n in sorted(record["errors"].items()))
        example = record["error_examples"][0] if record.get("error_examples") else None
        where = f"; first at {example['where']}: {example['message']}" if example else ""
        lines.append(f"  damaged records in {record['inputs'][0]}: {errors}{where}")
    if len(damaged) > MAX_DAMAGED_FILES_LISTED:
        lines.append(f"  … and {len(damaged) - MAX_DAMAGED_FILES_LISTED} more files (see _stats/)")
    return lines


def resolve_inputs(args: argparse.Namespace) -> list[str]:
    if args.input:
        files = fsio.expand(list(args.input))
        return files[: args.max_files] if args.max_files is not None else files
    return list_snapshot_files(args.cc_root, args.snapshot, args.format or "warc", args.max_files)


def filters_from_args(args: argparse.Namespace) -> TextFilters:
    if args.no_text_filters:
        return TextFilters.disabled()
    languages = tuple(args.languages.split(",")) if args.languages else None
    return TextFilters(min_words=args.min_words, min_chars=args.min_chars, languages=languages)


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
    if args.max_files is not None and args.max_files < 1:
        raise ConfigError("extract: --max-files must be at least 1")
    return ExtractConfig(
        inputs=tuple(resolve_inputs(args)),
        out=args.out,
        file_format=args.format if args.input else (args.format or "warc"),
        filters=filters_from_args(args),
        html_parser=args.html_parser,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        STAGE, help="extract image-text candidates from Common Crawl WARC/WAT files"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", help="snapshot id, e.g. CC-MAIN-2024-10")
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH_OR_GLOB",
        help="explicit WARC/WAT files (fsspec URLs, globs, {a..b} ranges)",
    )
    parser.add_argument(
        "--cc-root",
        default=PUBLIC_CC_BUCKET,
        help="where crawl-data/ lives (default: the public bucket, anonymous)",
    )
    parser.add_argument("--out", required=True, help="output folder for {shard}.parquet")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="warc (parse HTML) or wat (pre-parsed links); default: warc for "
        "--snapshot, from each file's name for --input",
    )
    parser.add_argument("--max-files", type=int, default=None, help="only the first N files")
    parser.add_argument(
        "--no-text-filters", action="store_true", help="keep every non-empty alt/title text"
    )
    parser.add_argument("--min-words", type=int, default=TextFilters.min_words)
    parser.add_argument("--min-chars", type=int, default=TextFilters.min_chars)
    parser.add_argument(
        "--languages", default=None, help="comma-separated language codes to keep (default: all)"
    )
    parser.add_argument(
        "--html-parser",
        choices=HTML_PARSERS,
        default=DEFAULT_HTML_PARSER,
        help="how WARC pages are read: the DOM-free tag scanner in C (default) or lexbor's HTML "
        "parser (same output, except that lexbor drops <img> after an accepted <frameset>; slower)",
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
