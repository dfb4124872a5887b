"""`python -m curation balance`: MetaCLIP matching and balancing over a Parquet dataset or a pool.

Pass 1 (`balance_match`, one task per input file): match each row's text against the metadata,
store the matches in OUT/_matches/SHARD.parquet (so pass 2 never matches again) and the shard's
sparse entry counts in OUT/_counts/SHARD.parquet. The counts are summed by a tree of
`balance_reduce` tasks (fan-in files per task) until few enough remain for the driver. Pass 2
(`balance`, one task per input file): keep each row with P = 1 - prod(1 - min(1, t/count(e))),
the draw seeded by (seed, uid), so the result does not depend on the sharding.

Output per input file, OUT/SHARD.parquet: the input rows plus `metaclip_entries` (list<int32>,
sorted entry ids), `keep` (bool), and with --texts-column `metaclip_text` (the text chosen).
When the input is a download pool, the output follows the curation-column contract instead:
POOL/curation/balance/SHARD.parquet with `uid`, `metaclip_entries`, `keep_balance` (the pool's own
rows are not copied; failed downloads are never kept). Both write OUT/entry_counts.parquet (one
row per matched entry: entry id, entry_text, count, p, kept [, lang]) and
OUT/balance_summary.json (head/tail, kept fraction, top entries before/after).

Text-only mode before download: run the same command on candidates (or deduped candidates) with
a larger t, then again on the pool with the target t. Download keeps a fraction s of the URLs
(0.5-0.9 on real lists), so a head entry kept near t_pre before download ends near s * t_pre;
use t_pre = 2 * t (enough for s >= 0.5) so the rebalance after download still has t to choose
from, while most of what the final balance would drop is never fetched. Give the download only
the rows with keep = true (e.g. a filtered copy of the candidates).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.metaclip import balancing, layout
from curation.metaclip.metadata import load_metadata
from curation.metaclip.passes import (
    MatchShard,
    ReduceCounts,
    SampleShard,
    TextColumns,
    metadata_fingerprint,
)
from curation.metaclip.summary import entry_table, format_summary, summarize_balance
from curation.runner import ShardTask, StageFn, StageReport, run_stage
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main

MATCH_STAGE, REDUCE_STAGE, SAMPLE_STAGE = "balance_match", "balance_reduce", "balance"
DEFAULT_FAN_IN = 256


@dataclass(frozen=True)
class BalanceConfig:
    input: str | Sequence[str]  # Parquet folder(s), glob(s) or file(s), or a download pool
    metadata: str  # see load_metadata: a JSON list, a .txt, a world, or wordfreq[:LANGS]
    t: float
    out: str | None = None  # default for a pool: POOL/curation/balance
    columns: TextColumns = field(default_factory=TextColumns)
    t_per_lang: Mapping[str, float] | None = None
    fan_in: int = DEFAULT_FAN_IN  # count files summed per reduce task
    num_cpus: float = 1

    def __post_init__(self) -> None:
        if self.fan_in < 2:
            raise ConfigError(f"balance: fan-in must be at least 2, got {self.fan_in}")


def reduce_counts(
    urls: list[str], work_dir: str, config: BalanceConfig, options: RunOptions, label: str
) -> tuple[pa.Table, list[StageReport]]:
    """Sum sparse count files: Ray tasks of `fan_in` files per level until the driver can finish."""
    reports: list[StageReport] = []
    level = 0
    while len(urls) > config.fan_in:
        level_dir = fsio.join(work_dir, f"{label}_level{level}")
        tasks = [
            ShardTask(f"{i:05d}", tuple(urls[start : start + config.fan_in]))
            for i, start in enumerate(range(0, len(urls), config.fan_in))
        ]
        report = run_stage(
            REDUCE_STAGE, ReduceCounts(), tasks, level_dir, **_pass_options(config, options)
        )
        reports.append(report)
        if not report.ok:
            return balancing.sum_counts([]), reports
        urls = [fsio.join(level_dir, f"{task.shard_id}.parquet") for task in tasks]
        level += 1
    return balancing.sum_counts([fsio.read_parquet(url) for url in urls]), reports


def count_and_reduce(
    count_stage: str,
    count_fn: StageFn,
    tasks: list[ShardTask],
    out: str,
    config: Any,
    options: RunOptions,
    stale_stage: str,
) -> tuple[list[StageReport], pa.Table | None]:
    """A per-shard count pass into OUT/_counts, then `reduce_counts` into OUT/_reduce.

    New counts make the reduce levels and the pass that samples from them (`stale_stage`'s done
    markers) stale, so both are cleared. Returns the reports and the summed counts (None when a
    pass failed). `config` needs `fan_in` and `num_cpus` (balance, debias and langmix have both)."""
    count = run_stage(count_stage, count_fn, tasks, out, **_pass_options(config, options))
    reports = [count]
    if not count.ok:
        return reports, None
    if count.completed:
        fsio.remove(fsio.join(out, "_reduce"))
        layout.clear_markers(out, stale_stage)
    urls = [fsio.join(out, "_counts", f"{task.shard_id}.parquet") for task in tasks]
    summed, reduce_reports = reduce_counts(
        urls, fsio.join(out, "_reduce"), config, options, "counts"
    )
    reports += reduce_reports
    return reports, summed if all(r.ok for r in reduce_reports) else None


def _pass_options(config: BalanceConfig, options: RunOptions) -> dict:
    return {**options.stage_args(), "num_cpus": config.num_cpus}


def run(config: BalanceConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    """Both passes and the reduce between them; resumable, deterministic for a given seed.

    The last report's summary is the balance summary (also in OUT/balance_summary.json) once
    every pass succeeded."""
    inputs = layout.resolve_inputs(config.input)
    out_dir = config.out or layout.default_out_dir(inputs)
    fsio.makedirs(out_dir)
    entries = load_metadata(config.metadata)
    fingerprint = metadata_fingerprint(entries)
    columns = config.columns
    if config.t_per_lang and not columns.lang:
        columns = TextColumns(columns.text, columns.texts, "lang")
    if not config.t_per_lang:
        columns = TextColumns(columns.text, columns.texts, None)
    layout.check_input_list(out_dir, inputs)
    layout.invalidate_stale_passes(
        out_dir,
        match_config={
            "metadata": fingerprint,
            "columns": columns.__dict__,
            "seed": options.seed if columns.texts else None,
        },
        sample_config={"t": config.t, "t_per_lang": config.t_per_lang, "seed": options.seed},
        passes={"match": [MATCH_STAGE], "sample": [SAMPLE_STAGE]},
    )
    tasks = list(inputs.tasks)
    passes = _pass_options(config, options)
    match = run_stage(
        MATCH_STAGE,
        MatchShard(config.metadata, fingerprint, columns, options.seed),
        tasks,
        out_dir,
        **passes,
    )
    reports = [match]
    if not match.ok:
        return reports
    work_dir = fsio.join(out_dir, "_reduce")
    if match.completed:  # new matches: the reduce levels and the sampling are stale
        fsio.remove(work_dir)
        layout.clear_markers(out_dir, SAMPLE_STAGE)
    counts, reduce_reports = reduce_counts(
        [fsio.join(out_dir, "_counts", f"{t.shard_id}.parquet") for t in tasks],
        work_dir,
        config,
        options,
        "counts",
    )
    reports += reduce_reports
    if not all(r.ok for r in reduce_reports):
        return reports
    probabilities = balancing.entry_probabilities(counts, len(entries), config.t, config.t_per_lang)
    sample = run_stage(
        SAMPLE_STAGE,
        SampleShard(probabilities, options.seed, inputs.is_pool, fsio.join(out_dir, "_matches")),
        tasks,
        out_dir,
        **passes,
    )
    reports.append(sample)
    if not sample.ok:
        return reports
    kept_work_dir = fsio.join(out_dir, "_reduce_kept")
    if sample.completed:
        fsio.remove(kept_work_dir)
    kept, kept_reports = reduce_counts(
        [fsio.join(out_dir, "_kept", f"{t.shard_id}.parquet") for t in tasks],
        kept_work_dir,
        config,
        options,
        "kept",
    )
    reports += kept_reports
    table = entry_table(counts, kept, probabilities, entries, with_lang=bool(config.t_per_lang))
    fsio.makedirs(out_dir)
    with fsio.open_atomic(fsio.join(out_dir, layout.ENTRY_COUNTS)) as handle:
        pq.write_table(table, handle, compression="zstd")
    summary = summarize_balance(table, config.t, config.t_per_lang, **_row_totals(out_dir))
    fsio.write_json(fsio.join(out_dir, layout.SUMMARY), summary)
    reports[-1].summary.update(summary)
    reports[-1].notes += [format_summary(summary), f"wrote {out_dir}"]
    return reports


def _row_totals(out_dir: str) -> dict[str, int]:
    from curation.stats import read_stage_records

    records = [
        r for r in read_stage_records(out_dir, SAMPLE_STAGE) if r.get("stage") == SAMPLE_STAGE
    ]
    total = {"eligible_rows": 0, "matched_rows": 0, "kept_rows": 0}
    for record in records:
        extra = record.get("extra", {})
        total["eligible_rows"] += extra.get("eligible", 0)
        total["matched_rows"] += extra.get("matched", 0)
        total["kept_rows"] += extra.get("kept", 0)
    return total


def _t_per_lang(value: str | None) -> dict[str, float] | None:
    """`--t-per-lang` is inline JSON or the URL of a JSON file: {"en": 20000, "ja": 4000, ...}."""
    if not value:
        return None
    text = value if value.lstrip().startswith("{") else fsio.read_bytes(value).decode()
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--t-per-lang {value}: not JSON ({exc})") from exc
    if not isinstance(mapping, dict) or not all(
        isinstance(v, (int, float)) and v > 0 for v in mapping.values()
    ):
        raise ConfigError(f"--t-per-lang {value}: expected an object of language -> positive t")
    return {str(k): float(v) for k, v in mapping.items()}


def config_from_args(args: argparse.Namespace) -> BalanceConfig:
    return BalanceConfig(
        input=args.input,
        metadata=args.metadata,
        t=args.t,
        out=args.out,
        columns=TextColumns(args.text_column, args.texts_column, args.lang_column),
        t_per_lang=_t_per_lang(args.t_per_lang),
        fan_in=args.fan_in,
    )


def build_metadata_docstring() -> str:
    from curation.metaclip import builder

    return builder.__doc__ or ""


def build_metadata_main(args: argparse.Namespace) -> int:
    from curation.metaclip.builder import build_metadata

    try:
        entries, report = build_metadata(
            wordnet_dir=args.wordnet,
            unigrams=args.unigrams,
            bigrams=args.bigrams,
            pageviews=fsio.expand(args.pageviews) if args.pageviews else (),
            min_unigram_count=args.min_unigram_count,
            min_pmi=args.min_pmi,
            min_bigram_count=args.min_bigram_count,
            min_title_views=args.min_title_views,
            pageview_domain=args.pageview_domain,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"balance-metadata: {exc}")
        return 2
    fsio.write_bytes(args.out, json.dumps(entries, ensure_ascii=False).encode())
    per_source = ", ".join(f"{k}={v}" for k, v in report.entries_per_source.items())
    bad = ", ".join(f"{k}={v}" for k, v in report.bad_lines.items()) or "none"
    print(f"wrote {len(entries)} entries to {args.out} ({per_source}); bad lines: {bad}")
    for example in report.bad_line_examples[:5]:
        print(f"  bad line {example}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    meta = subparsers.add_parser(
        "balance-metadata",
        help="build MetaCLIP metadata.json from WordNet/Wikipedia dumps",
        description=build_metadata_docstring(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    meta.add_argument("--out", required=True, help="metadata.json to write (fsspec URL)")
    meta.add_argument("--wordnet", help="WordNet 3.x dict/ folder with data.noun, data.verb, ...")
    meta.add_argument("--unigrams", help="TSV word<TAB>count from Wikipedia text")
    meta.add_argument("--bigrams", help="TSV 'word1 word2'<TAB>count from the same text")
    meta.add_argument("--pageviews", nargs="+", help="Wikimedia pageview dump files (globs ok)")
    meta.add_argument("--min-unigram-count", type=int, default=100)
    meta.add_argument("--min-pmi", type=float, default=30.0)
    meta.add_argument("--min-bigram-count", type=int, default=1)
    meta.add_argument("--min-title-views", type=int, default=70)
    meta.add_argument("--pageview-domain", default="en")
    meta.set_defaults(func=build_metadata_main)
    parser = subparsers.add_parser(
        "balance",
        help="MetaCLIP matching + balancing (adds metaclip_entries and keep)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="Parquet folder(s), glob(s) or file(s); a download pool folder "
        "gets the POOL/curation/balance layout",
    )
    parser.add_argument(
        "--metadata",
        required=True,
        help="metadata.json (JSON list), a .txt (one entry per line), a world.json "
        "or mini Common Crawl folder (its concepts), or wordfreq[:LANGS]",
    )
    parser.add_argument(
        "--t",
        required=True,
        type=float,
        help="balancing threshold: 20000 for 400M from 1.6B, 170000 for 2.5B; "
        "about 2x the post-download t when run on candidates",
    )
    parser.add_argument("--out", help="output folder (default for a pool: POOL/curation/balance)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument(
        "--texts-column",
        default=None,
        help="a list<string> column: pick one text per image, seeded by uid",
    )
    parser.add_argument(
        "--t-per-lang",
        default=None,
        help='MetaCLIP 2 per-language t: JSON {"en": 20000, ...} or a JSON file',
    )
    parser.add_argument("--lang-column", default="lang", help="read only with --t-per-lang")
    parser.add_argument(
        "--fan-in", type=int, default=DEFAULT_FAN_IN, help="count files summed per reduce task"
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
