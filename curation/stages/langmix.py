"""`python -m curation langmix`: per-language quotas for the training shards (SigLIP 2 trains on
90% English and 10% other languages).

    python -m curation langmix --pool POOL --language-mix en=0.9,other=0.1

Each quota names a language (`en`, `de`, ...) or `other` (every language not named, including
`und`, a caption whose language is unknown); a language the mix does not cover is dropped. The
mix applies among the rows the `--after` stages keep (default: balance, score, neardup, nsfw
and debias, those that ran), so `shards --require AFTER,langmix` writes shards with the quotas. The
per-language MetaCLIP t is balance's `--t-per-lang`, applied before this stage as usual.

The language of a row is the pool's `--lang-column` (extract's `lang`: the page's declared
`<html lang>`, else detected from the text) when the pool sidecars have it; otherwise it is
detected from the caption with extract's own detector, which leaves many short captions `und`.

1. Count (`langmix_count`, per pool shard): each eligible row gets a uniform draw seeded by
   (seed, uid); the shard writes a histogram of the draws per mix group (`_counts/SHARD.parquet`,
   at most groups x 4096 rows) and its rows' languages (`_langs/SHARD.parquet`). The histograms
   are summed by balance's tree reduce.
2. The driver takes the largest total K with K * quota(g) <= rows(g) for every group, and for
   each group the draw threshold below which K * quota(g) of its rows fall (from its histogram,
   interpolated inside one bin), so the kept counts match the quotas up to a fraction of a bin.
3. Sample (`langmix`, per pool shard): keep_langmix = eligible and draw < threshold(group);
   POOL/curation/langmix/SHARD.parquet holds `uid`, `lang`, `keep_langmix`.
OUT/langmix_summary.json has the targets, the rows per group before and after, the achieved
shares, the groups that bound the total, and the groups that had no rows at all.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.cc.text_filters import TextFilters
from curation.debias.pool_rows import applied_stages, pool_columns, shard_rows
from curation.metaclip.balancing import COUNTS_SCHEMA, sum_counts, uid_uniforms
from curation.runner import ShardContext, ShardTask, StageReport, run_stage
from curation.score.pool import list_pool_shards
from curation.stages.balance import DEFAULT_FAN_IN, count_and_reduce
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stats import read_stage_records

STAGE, COUNT_STAGE = "langmix", "langmix_count"
OTHER = "other"
UNDETERMINED = "und"
BINS = 4096
DEFAULT_AFTER = ("balance", "score", "neardup", "nsfw", "debias")
SUMMARY = "langmix_summary.json"
PLAN = "_plan.json"


@dataclass(frozen=True)
class LangmixConfig:
    pool: str
    mix: Mapping[str, float]  # language (or "other") -> share of the kept rows
    after: tuple[str, ...] = DEFAULT_AFTER
    lang_column: str = "lang"
    fan_in: int = DEFAULT_FAN_IN  # count files summed per reduce task
    num_cpus: float = 1

    def __post_init__(self) -> None:
        if not self.mix:
            raise ConfigError("langmix: --language-mix names no language")
        if any(share <= 0 for share in self.mix.values()):
            raise ConfigError(f"langmix: every share must be positive, got {dict(self.mix)}")
        total = sum(self.mix.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"langmix: the shares sum to {total:.6g}, not 1")
        if self.fan_in < 2:
            raise ConfigError(f"langmix: fan-in must be at least 2, got {self.fan_in}")

    @property
    def out(self) -> str:
        return fsio.join(self.pool, "curation", STAGE)


def parse_mix(value: str, option: str = "--language-mix") -> dict[str, float]:
    """`en=0.9,other=0.1` -> {"en": 0.9, "other": 0.1}."""
    mix: dict[str, float] = {}
    for item in value.split(","):
        name, sep, share = item.partition("=")
        name = name.strip().lower()
        try:
            mix[name] = float(share)
        except ValueError:
            raise ConfigError(f"{option}: {item!r} is not NAME=SHARE") from None
        if not sep or not name:
            raise ConfigError(f"{option}: {item!r} is not NAME=SHARE")
    return mix


def normalise_lang(value: str | None) -> str | None:
    """The primary subtag in lower case ("en-US" -> "en"); None when empty."""
    if not value:
        return None
    return value.strip().split("-")[0].split("_")[0].lower() or None


def group_of(lang: str, mix: Mapping[str, float]) -> str | None:
    if lang in mix:
        return lang
    return OTHER if OTHER in mix else None


@dataclass(frozen=True)
class CountLanguages:
    """Pass 1: the shard's languages and, per mix group, a histogram of its rows' draws."""

    pool: str
    mix: Mapping[str, float] = field(hash=False)
    after: tuple[str, ...]
    lang_column: str
    seed: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        _tar, sidecar = task.inputs
        has_lang = self.lang_column in pool_columns(sidecar)
        columns = ["text"] + ([self.lang_column] if has_lang else [])
        rows, eligible = shard_rows(self.pool, task.shard_id, sidecar, columns, self.after)
        texts = rows["text"].to_pylist()
        declared = rows[self.lang_column].to_pylist() if has_lang else [None] * len(texts)
        declared = [normalise_lang(lang) for lang in declared]
        langs = [
            lang or normalise_lang(TextFilters.detect_language(text or "")) or UNDETERMINED
            for lang, text in zip(declared, texts)
        ]
        from_column = sum(1 for lang, e in zip(declared, eligible) if e and lang)
        groups = [group_of(lang, self.mix) for lang in langs]
        in_mix = eligible & np.array([g is not None for g in groups], dtype=bool)
        draws = uid_uniforms(rows["uid"].to_pylist(), self.seed, STAGE)
        bins = np.minimum((draws * BINS).astype(np.int64), BINS - 1)
        counts = pa.table(
            {
                "lang": pa.array([g for g, m in zip(groups, in_mix) if m], pa.string()),
                "entry": pa.array(bins[in_mix], pa.int32()),
                "count": pa.array(np.ones(int(in_mix.sum()), dtype=np.int64)),
            },
            schema=COUNTS_SCHEMA,
        )
        ctx.write_parquet(f"_counts/{task.shard_id}.parquet", sum_counts([counts]))
        ctx.write_parquet(
            f"_langs/{task.shard_id}.parquet",
            pa.table(
                {
                    "uid": rows["uid"],
                    "lang": pa.array(langs, pa.string()),
                    "group": pa.array(groups, pa.string()),
                    "eligible": pa.array(in_mix),
                }
            ),
        )
        ctx.stats.rows_in, ctx.stats.rows_out = rows.num_rows, int(in_mix.sum())
        for reason, count in (
            ("removed_by_after", int((~eligible).sum())),
            ("not_in_mix", int((eligible & ~in_mix).sum())),
        ):
            if count:
                ctx.stats.drop(reason, count)
        ctx.stats.extra.update(
            languages=dict(Counter(lang for lang, e in zip(langs, eligible) if e)),
            lang_source=lang_source(self.lang_column, from_column, int(eligible.sum())),
        )


@dataclass(frozen=True)
class SampleLanguages:
    """Pass 2: keep a row when its draw falls below its group's threshold."""

    thresholds: Mapping[str, float] = field(hash=False)
    seed: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        langs = fsio.read_parquet(fsio.join(ctx.out_dir, "_langs", f"{task.shard_id}.parquet"))
        groups = langs["group"].to_pylist()
        draws = uid_uniforms(langs["uid"].to_pylist(), self.seed, STAGE)
        limits = np.array([self.thresholds.get(g, 0.0) if g else 0.0 for g in groups])
        keep = langs["eligible"].to_numpy(zero_copy_only=False) & (draws < limits)
        ctx.write_parquet(
            f"{task.shard_id}.parquet",
            pa.table({"uid": langs["uid"], "lang": langs["lang"], "keep_langmix": pa.array(keep)}),
        )
        ctx.stats.rows_in, ctx.stats.rows_out = langs.num_rows, int(keep.sum())
        mixed_out = int((langs["eligible"].to_numpy(zero_copy_only=False) & ~keep).sum())
        if mixed_out:
            ctx.stats.drop("mixed_out", mixed_out)
        ctx.stats.extra["kept"] = dict(Counter(g for g, k in zip(groups, keep) if k))


def lang_source(column: str, from_column: int, rows: int) -> str:
    """Where a shard's languages came from: the pool's column (null where an input had none),
    detection from the caption, or both."""
    if from_column == rows:
        return f"column {column}"
    return "detected from text" if not from_column else f"column {column}, else detected"


def mix_plan(histograms: pa.Table, mix: Mapping[str, float]) -> dict[str, Any]:
    """Rows per group, the kept count per group, and each group's draw threshold."""
    available = {name: 0 for name in mix}
    per_group: dict[str, np.ndarray] = {}
    for name in mix:
        hist = np.zeros(BINS, dtype=np.int64)
        rows = histograms.filter(pc.equal(histograms["lang"], name))
        np.add.at(hist, rows["entry"].to_numpy(), rows["count"].to_numpy())
        per_group[name] = hist
        available[name] = int(hist.sum())
    present = {name: share for name, share in mix.items() if available[name] > 0}
    scale = sum(present.values())
    target = {name: share / scale for name, share in present.items()}
    total = min((available[name] / share for name, share in target.items()), default=0.0)
    planned = {name: target[name] * total for name in target}
    thresholds = {name: draw_threshold(per_group[name], planned[name]) for name in target}
    binding = sorted(name for name in target if planned[name] >= available[name] - 1e-9)
    return {
        "available": available,
        "effective_target": target,
        "planned": planned,
        "thresholds": thresholds,
        "binding": binding,
        "no_rows": sorted(name for name in mix if available[name] == 0),
    }


def draw_threshold(histogram: np.ndarray, wanted: float) -> float:
    """The draw below which `wanted` of the histogram's rows fall, interpolated inside the bin
    (draws are uniform, so within a bin they are spread evenly)."""
    if wanted >= histogram.sum():
        return 1.0
    cumulative = np.cumsum(histogram)
    bin_index = int(np.searchsorted(cumulative, wanted, side="left"))
    before = cumulative[bin_index - 1] if bin_index else 0
    inside = (wanted - before) / histogram[bin_index] if histogram[bin_index] else 0.0
    return (bin_index + inside) / BINS


def run(config: LangmixConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    shards = list_pool_shards(config.pool)
    after = tuple(applied_stages(config.pool, config.after, STAGE))
    out = config.out
    fsio.makedirs(out)
    fsio.check_plan(
        fsio.join(out, PLAN),
        {
            "mix": dict(config.mix),
            "after": list(after),
            "lang_column": config.lang_column,
            "seed": options.seed,
            "shards": [shard.shard_id for shard in shards],
        },
        f"langmix folder {out}",
    )
    tasks = [ShardTask(shard.shard_id, (shard.tar, shard.sidecar)) for shard in shards]
    passes = {**options.stage_args(), "num_cpus": config.num_cpus}
    reports, histograms = count_and_reduce(
        COUNT_STAGE,
        CountLanguages(config.pool, dict(config.mix), after, config.lang_column, options.seed),
        tasks,
        out,
        config,
        options,
        STAGE,
    )
    if histograms is None:
        return reports
    plan = mix_plan(histograms, config.mix)
    sample = run_stage(
        STAGE, SampleLanguages(plan["thresholds"], options.seed), tasks, out, **passes
    )
    reports.append(sample)
    if not sample.ok:
        return reports
    summary = summarize(config, after, plan, out)
    fsio.write_json(fsio.join(out, SUMMARY), summary)
    sample.summary.update(summary)
    sample.notes += [describe(summary), f"wrote {out}"]
    return reports


def summarize(
    config: LangmixConfig, after: Sequence[str], plan: dict[str, Any], out: str
) -> dict[str, Any]:
    languages: Counter = Counter()
    sources: set[str] = set()
    for record in read_stage_records(out, COUNT_STAGE):
        languages.update(record["extra"]["languages"])
        sources.add(record["extra"]["lang_source"])
    kept: Counter = Counter()
    for record in read_stage_records(out, STAGE):
        kept.update(record["extra"]["kept"])
    kept_rows = sum(kept.values())
    eligible_rows = sum(plan["available"].values())
    return {
        "target": dict(config.mix),
        "effective_target": plan["effective_target"],
        "achieved": {name: kept[name] / kept_rows if kept_rows else 0.0 for name in config.mix},
        "rows_before": plan["available"],
        "rows_kept": {name: kept[name] for name in config.mix},
        "binding": plan["binding"],
        "no_rows": plan["no_rows"],
        "eligible_rows": eligible_rows,
        "kept_rows": kept_rows,
        "kept_share": kept_rows / eligible_rows if eligible_rows else 0.0,
        "after": list(after),
        "lang_source": sorted(sources),
        "languages": dict(languages.most_common()),
    }


def describe(summary: dict[str, Any]) -> str:
    shares = ", ".join(
        f"{name} {summary['achieved'][name]:.3f} (target {share:.3f})"
        for name, share in summary["target"].items()
    )
    lines = [
        f"langmix: kept {summary['kept_rows']} of {summary['eligible_rows']} rows "
        f"({summary['kept_share']:.1%}): {shares}",
        f"  bound by: {', '.join(summary['binding']) or '-'}; after: "
        f"{', '.join(summary['after']) or 'nothing'}; languages {', '.join(summary['lang_source'])}",
    ]
    if summary["no_rows"]:
        lines.append(f"  short: no rows at all for {', '.join(summary['no_rows'])}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> LangmixConfig:
    return LangmixConfig(
        pool=args.pool,
        mix=parse_mix(args.language_mix),
        after=tuple(s.strip() for s in args.after.split(",") if s.strip()),
        lang_column=args.lang_column,
        fan_in=args.fan_in,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "langmix",
        help="per-language quotas for the training shards (adds keep_langmix)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pool", required=True)
    parser.add_argument(
        "--language-mix", required=True, help="LANG=SHARE,... summing to 1; `other` = the rest"
    )
    parser.add_argument(
        "--after",
        default=",".join(DEFAULT_AFTER),
        help="stages whose keep columns apply first (those that ran); give shards the same",
    )
    parser.add_argument("--lang-column", default="lang", help="the pool's language column")
    parser.add_argument(
        "--fan-in", type=int, default=DEFAULT_FAN_IN, help="count files summed per reduce task"
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
