"""Stage `grounding`: grounding datasets in their native files → the trainer's grounding shards.

    python -m curation grounding --format openimages|objects365|visualgenome|refcoco|grand \\
        --images ROOT --annotations FILES... --out GROUNDING [--mix-config MIX.yaml]

Writes the grounding shards (see curation.ingest.grounding_shards) and, with --mix-config,
records the source in the mix file the trainer reads (training.data.grounding_mix). The plan
(which image goes to which shard) is fixed before any shard is written, so a re-run resumes it;
a folder planned from other inputs or settings is refused.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from curation import fsio
from curation.ingest import grounding_shards
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats import grounding_formats
from curation.ingest.formats.refcoco import evaluation_coco_ids
from curation.ingest.licences import licence_of
from curation.runner import ShardTask, StageReport, run_stage
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from training.data import grounding_mix as mix

DECONTAMINATION_FILE = "_decontamination/refcoco_eval_coco_ids.json"


@dataclass(frozen=True)
class GroundingConfig:
    format: str  # a name in grounding_formats()
    images: str  # image root the annotations' file names are under
    annotations: Sequence[str]  # annotation files (globs allowed)
    out: str  # grounding shard folder
    samples_per_shard: int = 5000
    max_samples: int | None = None  # a seeded random subset (default: the mix file's quota)
    exclude_coco_files: Sequence[str] = ()  # JSON lists of COCO ids to leave out
    convention: BoxConvention | None = None  # default: the format's own
    max_side: int | None = None  # downscale images whose longer side is larger
    mix_config: str | None = None  # mix file to record this source in
    source: str | None = None  # name in the mix file (default: the format)

    def __post_init__(self) -> None:
        if self.format not in grounding_formats():
            raise ConfigError(f"grounding: unknown format {self.format!r}")
        if self.samples_per_shard < 1:
            raise ConfigError("grounding: --samples-per-shard must be at least 1")


def input_paths(patterns: Sequence[str]) -> list[str]:
    """Files named directly or by glob, in the order given (each glob sorted)."""
    urls = [url for pattern in patterns for url in fsio.expand(pattern)]
    missing = [url for url in urls if not fsio.exists(url)]
    if not urls or missing:
        raise ConfigError(f"no such annotation file(s): {', '.join(missing or patterns)}")
    return urls


def plan(config: GroundingConfig, seed: int) -> dict:
    """Read the annotations, fix and save the shard plan; returns the plan record. Annotations
    that cannot be read are a ConfigError: nothing has been written yet."""
    fmt = grounding_formats()[config.format]
    source = config.source or config.format
    annotation_urls = input_paths(config.annotations)
    max_samples = config.max_samples
    entry = mix.read_mix(config.mix_config).get(source) if config.mix_config else None
    if max_samples is None and entry is not None:
        max_samples = entry.max_samples
    excluded: set[int] = set()
    for url in config.exclude_coco_files:
        excluded.update(int(i) for i in fsio.read_json(url, expect=list))
    if config.format == "refcoco":
        own = evaluation_coco_ids(annotation_urls)
        fsio.write_json(fsio.join(config.out, DECONTAMINATION_FILE), sorted(own))
        excluded |= own
    reader_drops: Counter = Counter()
    table, image_drops = grounding_shards.plan_grounding(
        fmt.read(annotation_urls, reader_drops),
        config.samples_per_shard,
        exclude_coco_ids=excluded,
        max_samples=max_samples,
        seed=seed,
    )
    convention = config.convention or fmt.convention
    record = {
        "format": config.format,
        "source": source,
        "annotations": annotation_urls,
        "images": config.images,
        "box_convention": convention.spec(),
        "planned": table.num_rows,
        "annotation_drops": dict(reader_drops),
        "image_drops": dict(image_drops),
        "excluded_coco_ids": len(excluded),
        "max_samples": max_samples,
        "seed": seed,
    }
    grounding_shards.check_or_save_plan(config.out, table, record)
    return record


def run(config: GroundingConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    """Plan and write one dataset's grounding shards; the plan record is the report's summary."""
    try:
        record = plan(config, options.seed)
    except (ConfigError, fsio.PlanMismatchError):
        raise
    except ValueError as exc:  # unreadable annotations: bad input, nothing written yet
        raise ConfigError(str(exc)) from exc
    table = fsio.read_parquet(fsio.join(config.out, grounding_shards.PLAN), ["shard"])
    tasks = [ShardTask(shard) for shard in sorted(set(table["shard"].to_pylist()))]
    convention = config.convention or grounding_formats()[config.format].convention
    writer = grounding_shards.WriteGroundingShard(
        fsio.join(config.out, grounding_shards.PLAN), config.images, convention, config.max_side
    )
    report = run_stage(
        grounding_shards.STAGE,
        writer,
        tasks,
        config.out,
        **options.stage_args(),
    )
    report.summary.update(record)
    report.notes.append(
        f"grounding: {record['planned']:,} images planned; dropped annotations "
        f"{record['annotation_drops']}, images {record['image_drops']}"
    )
    if config.mix_config and report.ok:
        written = sum(r["rows_out"] for r in report.completed) + _samples_already_written(
            config.out, report
        )
        source = record["source"]
        mix.record_source(
            config.mix_config, source, fsio.join(config.out, "*.tar"), written, licence_of(source)
        )
        for name, entry in sorted(mix.read_mix(config.mix_config).items()):
            report.notes.append(
                f"  mix {name}: {entry.samples} samples x repeat {entry.repeat} ({entry.shards})"
            )
    return [report]


def _samples_already_written(out: str, report: StageReport) -> int:
    """Samples of shards an earlier run finished (their markers hold the counts)."""
    return sum(
        fsio.read_json(
            fsio.join(out, "_stats", grounding_shards.STAGE, f"{shard}.json"), expect=dict
        )["rows_out"]
        for shard in report.skipped
    )


def config_from_args(args: argparse.Namespace) -> GroundingConfig:
    try:
        convention = BoxConvention.parse(args.box_convention) if args.box_convention else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return GroundingConfig(
        format=args.format,
        images=args.images,
        annotations=tuple(args.annotations),
        out=args.out,
        samples_per_shard=args.samples_per_shard,
        max_samples=args.max_samples,
        exclude_coco_files=tuple(args.exclude_coco_ids or ()),
        convention=convention,
        max_side=args.max_side,
        mix_config=args.mix_config,
        source=args.source,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "grounding", help="grounding datasets (native files) -> grounding shards"
    )
    parser.add_argument(
        "--format",
        required=True,
        choices=sorted(grounding_formats()),
        help="; ".join(f"{name}: {fmt.help}" for name, fmt in sorted(grounding_formats().items())),
    )
    parser.add_argument(
        "--images", required=True, help="image root the annotations' file names are under"
    )
    parser.add_argument(
        "--annotations", nargs="+", required=True, help="annotation files (globs allowed)"
    )
    parser.add_argument("--out", required=True, help="grounding shard folder")
    parser.add_argument("--source", help="name in the mix config (default: the format)")
    parser.add_argument("--samples-per-shard", type=int, default=5000)
    parser.add_argument(
        "--max-samples", type=int, help="quota: a seeded random subset of this many images"
    )
    parser.add_argument(
        "--exclude-coco-ids",
        nargs="*",
        help=f"JSON lists of COCO ids to leave out (e.g. a refcoco run's {DECONTAMINATION_FILE})",
    )
    parser.add_argument(
        "--box-convention", help="override the dataset's box convention, e.g. xyxy-pixel"
    )
    parser.add_argument("--max-side", type=int, help="downscale images whose longer side is larger")
    parser.add_argument(
        "--mix-config", help="mix file to record this source in (and read its quota from)"
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
