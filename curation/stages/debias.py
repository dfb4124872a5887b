"""`python -m curation debias`: resample the pool so a sensitive attribute is represented and
associated with concepts as the user sets (SigLIP 2's de-biasing, after "CLIP the Bias").

    python -m curation debias --pool POOL --metadata wordfreq:en --max-association 0.05 \
        --max-drop 0.1 [--attribute-terms TERMS.json] [--representation female=0.5,male=0.5]

1. Count (`debias_count`, per pool shard): each caption the `--after` stages keep gets an
   attribute label from the term list (curation/debias/terms.py) and its MetaCLIP entries (the
   balance stage's matcher); the shard writes `_matches/SHARD.parquet` and sparse counts per
   (label, concept), summed by balance's tree reduce.
2. The driver plans a keep fraction per (value, concept) cell with a linear program
   (curation/debias/planner.py): every value's share within `--representation` +-
   `--representation-tolerance`, every constrained concept's association at most
   `--max-association`, at most `--max-drop` of the eligible rows dropped, as many kept as
   possible; targets that cannot be met within the drop bound are relaxed as little as needed,
   first-order first (the summary says how far).
3. Sample (`debias`, per pool shard): keep_debias = eligible and draw(seed, uid) < the row's
   keep fraction; captions naming no value or several values are always kept.
   POOL/curation/debias/SHARD.parquet holds `uid`, `sensitive_attribute`, `keep_debias`; the
   kept rows' counts are summed again, so the after-statistics are measured, not planned.
OUT/debias_summary.json: representation and association before and after, the targets, the
rows kept; OUT/debias_concepts.parquet: per constrained concept and value, rows and shares
before and after. Limits: term lists see only what a caption says (English-first by default);
an image whose caption names no attribute value is never resampled.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.debias import planner
from curation.debias.passes import COUNT_STAGE, STAGE, CountAttributes, SampleAttributes
from curation.debias.pool_rows import applied_stages
from curation.debias.terms import DEFAULT_TERMS, load_terms
from curation.metaclip.metadata import load_metadata
from curation.metaclip.passes import metadata_fingerprint
from curation.runner import ShardTask, StageReport, run_stage
from curation.score.pool import list_pool_shards
from curation.stages.balance import DEFAULT_FAN_IN, count_and_reduce, reduce_counts
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stages.langmix import parse_mix

DEFAULT_AFTER = ("balance", "score", "neardup", "nsfw")
SUMMARY = "debias_summary.json"
CONCEPTS = "debias_concepts.parquet"
PLAN = "_plan.json"
TOP_CONCEPTS = 20


@dataclass(frozen=True)
class DebiasConfig:
    pool: str
    metadata: str  # the concepts: anything balance's --metadata takes
    attribute_terms: str = DEFAULT_TERMS
    representation: Mapping[str, float] | None = None  # value -> target share; default: equal
    tolerance: float = 0.01
    max_association: float = 0.05
    min_concept_rows: int = 100
    max_drop: float = 0.1
    after: tuple[str, ...] = DEFAULT_AFTER
    fan_in: int = DEFAULT_FAN_IN
    num_cpus: float = 1

    def __post_init__(self) -> None:
        for name in ("tolerance", "max_association", "max_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"debias: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.tolerance > self.max_association:
            raise ConfigError(
                f"debias: --representation-tolerance {self.tolerance} exceeds --max-association "
                f"{self.max_association} (associations are measured around the achieved shares)"
            )
        if self.min_concept_rows < 1:
            raise ConfigError(
                f"debias: --min-concept-rows must be >= 1, got {self.min_concept_rows}"
            )
        if self.fan_in < 2:
            raise ConfigError(f"debias: fan-in must be at least 2, got {self.fan_in}")

    @property
    def out(self) -> str:
        return fsio.join(self.pool, "curation", STAGE)

    def targets(self, values: list[str]) -> planner.Targets:
        shares = dict(self.representation or {value: 1 / len(values) for value in values})
        if sorted(shares) != sorted(values):
            raise ConfigError(
                f"debias: --representation names {sorted(shares)}, the terms have {sorted(values)}"
            )
        if abs(sum(shares.values()) - 1) > 1e-6 or min(shares.values()) < 0:
            raise ConfigError(f"debias: --representation shares must sum to 1, got {shares}")
        return planner.Targets(
            shares, self.tolerance, self.max_association, self.min_concept_rows, self.max_drop
        )


def run(config: DebiasConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    shards = list_pool_shards(config.pool)
    after = tuple(applied_stages(config.pool, config.after, STAGE))
    terms = load_terms(config.attribute_terms)
    targets = config.targets(terms.names)
    entries = load_metadata(config.metadata)
    fingerprint = metadata_fingerprint(entries)
    own_terms = terms.all_terms()
    excluded = {i for i, entry in enumerate(entries) if entry.lower() in own_terms}
    out = config.out
    fsio.makedirs(out)
    fsio.check_plan(
        fsio.join(out, PLAN),
        {
            "metadata": fingerprint,
            "terms": {"attribute": terms.attribute, "values": terms.values},
            "targets": targets.__dict__,
            "after": list(after),
            "seed": options.seed,
            "shards": [shard.shard_id for shard in shards],
        },
        f"debias folder {out}",
    )
    tasks = [ShardTask(shard.shard_id, (shard.tar, shard.sidecar)) for shard in shards]
    passes = {**options.stage_args(), "num_cpus": config.num_cpus}
    reports, before = count_and_reduce(
        COUNT_STAGE,
        CountAttributes(config.pool, after, config.attribute_terms, config.metadata, fingerprint),
        tasks,
        out,
        config,
        options,
        STAGE,
    )
    if before is None:
        return reports
    cells = planner.cells_from_counts(before, terms.names, excluded, config.min_concept_rows)
    plan = planner.plan_keep(cells, targets)
    sample = run_stage(
        STAGE,
        SampleAttributes(tuple(terms.names), cells.concepts, plan.keep, options.seed),
        tasks,
        out,
        **passes,
    )
    reports.append(sample)
    if not sample.ok:
        return reports
    if sample.completed:
        fsio.remove(fsio.join(out, "_reduce_kept"))
    kept, kept_reports = reduce_counts(
        [fsio.join(out, "_kept", f"{t.shard_id}.parquet") for t in tasks],
        fsio.join(out, "_reduce_kept"),
        config,
        options,
        "kept",
    )
    reports += kept_reports
    if not all(r.ok for r in kept_reports):
        return reports
    after_cells = planner.cells_from_counts(kept, terms.names, excluded, 1)
    table, summary = statistics(cells, after_cells, entries, targets, plan)
    summary.update(attribute=terms.attribute, after=list(after), metadata=config.metadata)
    with fsio.open_atomic(fsio.join(out, CONCEPTS)) as handle:
        pq.write_table(table, handle, compression="zstd")
    fsio.write_json(fsio.join(out, SUMMARY), summary)
    reports[-1].summary.update(summary)
    reports[-1].notes += [describe(summary), f"wrote {out}"]
    return reports


def statistics(
    before: planner.Cells,
    after: planner.Cells,
    entries: list[str],
    targets: planner.Targets,
    plan: planner.Plan,
) -> tuple[pa.Table, dict[str, Any]]:
    """The per-concept table and the summary, both measured on the counts before and after."""
    values = before.values
    column_of = {int(c): i for i, c in enumerate(after.concepts)}
    members_after = np.zeros_like(before.members)
    for column, concept in enumerate(before.concepts):
        if int(concept) in column_of:
            members_after[:, column] = after.members[:, column_of[int(concept)]]
    totals_before = np.array([before.totals.get(v, 0) for v in values], dtype=np.int64)
    totals_after = np.array([after.totals.get(v, 0) for v in values], dtype=np.int64)
    share_before = planner.representation(totals_before)
    share_after = planner.representation(totals_after)
    spread_before = planner.association(before.members, share_before)
    spread_after = planner.association(members_after, share_after)
    rows_before = before.members.sum(axis=0)
    rows_after = members_after.sum(axis=0)
    concept_shares_before = before.members / np.maximum(rows_before, 1)
    concept_shares_after = members_after / np.maximum(rows_after, 1)
    names = [entries[int(c)] for c in before.concepts]
    table = pa.table(
        {
            "entry": pa.array(np.repeat(before.concepts, len(values)), pa.int32()),
            "entry_text": pa.array(np.repeat(np.array(names, dtype=object), len(values)).tolist()),
            "value": pa.array(values * len(names), pa.string()),
            "rows_before": pa.array(before.members.T.ravel(), pa.int64()),
            "rows_after": pa.array(members_after.T.ravel(), pa.int64()),
            "share_before": pa.array(concept_shares_before.T.ravel(), pa.float64()),
            "share_after": pa.array(concept_shares_after.T.ravel(), pa.float64()),
            "association_before": pa.array(np.repeat(spread_before, len(values)), pa.float64()),
            "association_after": pa.array(np.repeat(spread_after, len(values)), pa.float64()),
        }
    )
    order = np.argsort(-spread_before, kind="stable")[:TOP_CONCEPTS]
    eligible_after = sum(after.totals.values())
    summary = {
        "values": values,
        "target_representation": dict(targets.representation),
        "representation_tolerance": targets.tolerance,
        "representation_before": dict(zip(values, share_before.tolist())),
        "representation_after": dict(zip(values, share_after.tolist())),
        "target": targets.max_association,
        "association_before": float(spread_before.max(initial=0.0)),
        "association_after": float(spread_after.max(initial=0.0)),
        "association_mean_before": _weighted(spread_before, rows_before),
        "association_mean_after": _weighted(spread_after, rows_after),
        "constrained_concepts": len(before.concepts),
        "min_concept_rows": targets.min_concept_rows,
        "eligible_rows": before.eligible,
        "kept_rows": eligible_after,
        "kept_share": eligible_after / before.eligible if before.eligible else 1.0,
        "max_drop": targets.max_drop,
        "attributed_rows_before": before.attributed,
        "attributed_rows_after": after.attributed,
        "rows_per_label_before": before.totals,
        "rows_per_label_after": after.totals,
        "relaxation": plan.relaxation,
        "planned_representation": dict(zip(values, plan.center.tolist())),
        "planned_association_bound": plan.association_bound,
        "planned_kept_attributed": plan.planned_kept,
        "top_concepts": [
            {
                "entry": int(before.concepts[i]),
                "text": names[i],
                "rows_before": int(rows_before[i]),
                "rows_after": int(rows_after[i]),
                "shares_before": dict(zip(values, concept_shares_before[:, i].tolist())),
                "shares_after": dict(zip(values, concept_shares_after[:, i].tolist())),
                "association_before": float(spread_before[i]),
                "association_after": float(spread_after[i]),
            }
            for i in order
        ],
    }
    return table, summary


def _weighted(spread: np.ndarray, rows: np.ndarray) -> float:
    return float((spread * rows).sum() / rows.sum()) if rows.sum() else 0.0


def describe(summary: dict[str, Any]) -> str:
    def shares(key: str) -> str:
        return ", ".join(f"{v} {s:.3f}" for v, s in summary[key].items())

    lines = [
        f"debias ({summary['attribute']}): kept {summary['kept_rows']} of "
        f"{summary['eligible_rows']} rows ({summary['kept_share']:.1%}, max drop "
        f"{summary['max_drop']:.0%})",
        f"  representation {shares('representation_before')} -> "
        f"{shares('representation_after')} (target {shares('target_representation')})",
        f"  association (max over {summary['constrained_concepts']} concepts) "
        f"{summary['association_before']:.3f} -> {summary['association_after']:.3f} "
        f"(target {summary['target']:.3f}); weighted mean {summary['association_mean_before']:.3f}"
        f" -> {summary['association_mean_after']:.3f}",
    ]
    if not summary["attributed_rows_before"]:
        lines.append(f"  no caption names one value of {summary['attribute']}: nothing resampled")
    if summary["relaxation"]:
        lines.append(
            f"  the targets do not fit the drop bound (relaxation {summary['relaxation']:.3f}): "
            f"planned representation {shares('planned_representation')}, association <= "
            f"{summary['planned_association_bound']:.3f}"
        )
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> DebiasConfig:
    return DebiasConfig(
        pool=args.pool,
        metadata=args.metadata,
        attribute_terms=args.attribute_terms,
        representation=parse_mix(args.representation, "--representation")
        if args.representation
        else None,
        tolerance=args.representation_tolerance,
        max_association=args.max_association,
        min_concept_rows=args.min_concept_rows,
        max_drop=args.max_drop,
        after=tuple(s.strip() for s in args.after.split(",") if s.strip()),
        fan_in=args.fan_in,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "debias",
        help="resample for attribute representation and association targets (adds keep_debias)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pool", required=True)
    parser.add_argument(
        "--metadata", required=True, help="the concepts: anything balance --metadata takes"
    )
    parser.add_argument(
        "--attribute-terms",
        default=DEFAULT_TERMS,
        help='JSON {"attribute": NAME, "values": {VALUE: [terms]}} (default: English gender terms)',
    )
    parser.add_argument(
        "--representation", default=None, help="VALUE=SHARE,... target shares (default: equal)"
    )
    parser.add_argument("--representation-tolerance", type=float, default=0.01)
    parser.add_argument(
        "--max-association",
        type=float,
        default=0.05,
        help="target for max over values of |P(value | concept) - P(value)|",
    )
    parser.add_argument(
        "--min-concept-rows",
        type=int,
        default=100,
        help="concepts with fewer attributed rows are not constrained",
    )
    parser.add_argument(
        "--max-drop", type=float, default=0.1, help="the most of the eligible rows it may drop"
    )
    parser.add_argument(
        "--after",
        default=",".join(DEFAULT_AFTER),
        help="stages whose keep columns apply first (those that ran); give shards the same",
    )
    parser.add_argument(
        "--fan-in", type=int, default=DEFAULT_FAN_IN, help="count files summed per reduce task"
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
