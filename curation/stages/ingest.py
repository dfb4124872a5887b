"""Open datasets beside Common Crawl: URL lists into candidates, grounding sets into shards.

    python -m curation ingest-urls --format laion|datacomp|parquet --input LISTS... --out CANDIDATES
    python -m curation grounding --format openimages|objects365|visualgenome|refcoco|grand \\
        --images ROOT --annotations FILES... --out GROUNDING [--mix-config MIX.yaml]
    python -m curation blur-faces --pool POOL --face-boxes CANDIDATES

ingest-urls writes CANDIDATES/{source}-{NNNNN}.parquet (one per list file, in sorted order; the
list is saved in CANDIDATES/_inputs/ingest_urls-{source}.json), so LAION, DataComp and the Common
Crawl extract can share one candidates folder and one global dedup. grounding writes the trainer's
grounding shards (see curation.ingest.grounding_shards) and, with --mix-config, records the source
in the mix file the trainer reads (curation.ingest.mix). blur-faces blurs the given face boxes in
a downloaded pool, in place (curation.ingest.face_blur); run it before the curation stages.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass

import pyarrow.parquet as pq

from curation import fsio
from curation.download.imaging import RESIZE_MODES
from curation.download.plan import input_files
from curation.ingest import face_blur, grounding_shards
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats import grounding_formats
from curation.ingest.formats.refcoco import evaluation_coco_ids
from curation.ingest.licences import licence_of
from curation.ingest.url_lists import FORMATS, UrlListFormat, generic_format, iter_candidate_batches
from curation.runner import ShardContext, ShardTask, StageReport, run_stage
from curation.score.pool import list_pool_shards
from training.data import grounding_mix as mix

URLS_STAGE = "ingest_urls"
DECONTAMINATION_FILE = "_decontamination/refcoco_eval_coco_ids.json"


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


def url_list_tasks(inputs: list[str], out: str, source: str) -> list[ShardTask]:
    """One task per list file; the numbering is saved so a re-run maps files to the same ids."""
    files = input_files(inputs)
    if not files:
        raise ValueError(f"ingest-urls: no Parquet files match {' '.join(inputs)}")
    manifest = fsio.join(out, "_inputs", f"{URLS_STAGE}-{source}.json")
    if fsio.exists(manifest):
        if fsio.read_json(manifest)["inputs"] != files:
            raise ValueError(
                f"ingest-urls: {out} already holds source {source!r} from other lists "
                f"(see {manifest}); use another --source or --out"
            )
    else:
        fsio.write_json(manifest, {"inputs": files})
    return [ShardTask(f"{source}-{index:05d}", (url,)) for index, url in enumerate(files)]


def ingest_url_lists(
    inputs: list[str],
    out: str,
    fmt: UrlListFormat,
    source: str,
    *,
    seed: int = 0,
    use_ray: bool = True,
) -> StageReport:
    if not source or "/" in source:
        raise ValueError(f"ingest-urls: --source must be a plain name, got {source!r}")
    fsio.makedirs(out)
    return run_stage(
        URLS_STAGE,
        IngestUrlList(fmt, source),
        url_list_tasks(inputs, out, source),
        out,
        seed=seed,
        use_ray=use_ray,
    )


def convert_grounding(
    format_name: str,
    images_root: str,
    annotations: list[str],
    out: str,
    *,
    samples_per_shard: int = 5000,
    max_samples: int | None = None,
    exclude_coco_files: tuple[str, ...] = (),
    convention: BoxConvention | None = None,
    max_side: int | None = None,
    mix_config: str | None = None,
    source: str | None = None,
    seed: int = 0,
    use_ray: bool = True,
) -> tuple[StageReport, dict]:
    """Plan and write one dataset's grounding shards; returns the report and the plan record."""
    fmt = grounding_formats()[format_name]
    source = source or format_name
    annotation_urls = input_paths(annotations)
    if samples_per_shard < 1:
        raise ValueError("grounding: --samples-per-shard must be at least 1")
    entry = mix.read_mix(mix_config).get(source) if mix_config else None
    if max_samples is None and entry is not None:
        max_samples = entry.max_samples
    excluded: set[int] = set()
    for url in exclude_coco_files:
        excluded.update(int(i) for i in fsio.read_json(url))
    if format_name == "refcoco":
        own = evaluation_coco_ids(annotation_urls)
        fsio.write_json(fsio.join(out, DECONTAMINATION_FILE), sorted(own))
        excluded |= own
    reader_drops: Counter = Counter()
    plan, image_drops = grounding_shards.plan_grounding(
        fmt.read(annotation_urls, reader_drops),
        samples_per_shard,
        exclude_coco_ids=excluded,
        max_samples=max_samples,
        seed=seed,
    )
    convention = convention or fmt.convention
    record = {
        "format": format_name,
        "source": source,
        "annotations": annotation_urls,
        "images": images_root,
        "box_convention": convention.spec(),
        "planned": plan.num_rows,
        "annotation_drops": dict(reader_drops),
        "image_drops": dict(image_drops),
        "excluded_coco_ids": len(excluded),
        "max_samples": max_samples,
        "seed": seed,
    }
    grounding_shards.check_or_save_plan(out, plan, record)
    plan_url = fsio.join(out, grounding_shards.PLAN)
    tasks = [ShardTask(shard) for shard in sorted(set(plan["shard"].to_pylist()))]
    writer = grounding_shards.WriteGroundingShard(plan_url, images_root, convention, max_side)
    report = run_stage(grounding_shards.STAGE, writer, tasks, out, seed=seed, use_ray=use_ray)
    if mix_config and report.ok:
        written = sum(r["rows_out"] for r in report.completed) + _samples_already_written(
            out, report
        )
        mix.record_source(mix_config, source, fsio.join(out, "*.tar"), written, licence_of(source))
    return report, record


def _samples_already_written(out: str, report: StageReport) -> int:
    """Samples of shards an earlier run finished (their markers hold the counts)."""
    return sum(
        fsio.read_json(fsio.join(out, "_stats", grounding_shards.STAGE, f"{shard}.json"))[
            "rows_out"
        ]
        for shard in report.skipped
    )


def input_paths(patterns: list[str]) -> list[str]:
    """Files named directly or by glob, in the order given (each glob sorted)."""
    urls = [url for pattern in patterns for url in fsio.expand(pattern)]
    missing = [url for url in urls if not fsio.exists(url)]
    if not urls or missing:
        raise ValueError(f"no such annotation file(s): {', '.join(missing or patterns)}")
    return urls


def face_box_files(inputs: list[str]) -> tuple[str, ...]:
    """The candidate files that carry face boxes (a DataComp list's ingest output)."""
    files = []
    for url in input_files(inputs):
        fs, path = fsio.filesystem(url)
        with fs.open(path, "rb") as handle:
            if "face_bboxes" in pq.ParquetFile(handle).schema_arrow.names:
                files.append(url)
    if not files:
        raise ValueError(f"blur-faces: no file with a face_bboxes column in {' '.join(inputs)}")
    return tuple(files)


def blur_pool_faces(
    pool: str,
    face_boxes: list[str],
    *,
    resize_mode: str = "keep_ratio_largest",
    method: str = "gaussian",
    seed: int = 0,
    use_ray: bool = True,
) -> StageReport:
    tasks = [
        ShardTask(shard.shard_id, (shard.tar, shard.sidecar)) for shard in list_pool_shards(pool)
    ]
    stage = face_blur.BlurPoolShard(face_box_files(face_boxes), resize_mode, method)
    return run_stage(face_blur.STAGE, stage, tasks, pool, seed=seed, use_ray=use_ray)


def _url_format(args: argparse.Namespace) -> UrlListFormat:
    if args.format != "parquet":
        return FORMATS[args.format]
    return generic_format(
        args.url_col, args.text_col, args.width_col, args.height_col, tuple(args.keep)
    )


def _ingest_urls_main(args: argparse.Namespace) -> int:
    if args.format == "parquet" and not args.source:
        print("ingest-urls: --format parquet needs --source NAME (the dataset the list comes from)")
        return 2
    try:
        report = ingest_url_lists(
            args.input,
            args.out,
            _url_format(args),
            args.source or args.format,
            seed=args.seed,
            use_ray=not args.no_ray,
        )
    except ValueError as exc:
        print(f"ingest-urls: {exc}")
        return 2
    print(report.describe())
    return 0 if report.ok else 1


def _grounding_main(args: argparse.Namespace) -> int:
    try:
        convention = BoxConvention.parse(args.box_convention) if args.box_convention else None
        report, record = convert_grounding(
            args.format,
            args.images,
            args.annotations,
            args.out,
            samples_per_shard=args.samples_per_shard,
            max_samples=args.max_samples,
            exclude_coco_files=tuple(args.exclude_coco_ids or ()),
            convention=convention,
            max_side=args.max_side,
            mix_config=args.mix_config,
            source=args.source,
            seed=args.seed,
            use_ray=not args.no_ray,
        )
    except ValueError as exc:
        print(f"grounding: {exc}")
        return 2
    print(report.describe())
    print(
        f"grounding: {record['planned']:,} images planned; dropped annotations {record['annotation_drops']}, "
        f"images {record['image_drops']}"
    )
    if args.mix_config and report.ok:
        for source, entry in sorted(mix.read_mix(args.mix_config).items()):
            print(
                f"  mix {source}: {entry.samples} samples x repeat {entry.repeat} ({entry.shards})"
            )
    return 0 if report.ok else 1


def _blur_main(args: argparse.Namespace) -> int:
    try:
        report = blur_pool_faces(
            args.pool,
            args.face_boxes,
            resize_mode=args.resize_mode,
            method=args.method,
            seed=args.seed,
            use_ray=not args.no_ray,
        )
    except ValueError as exc:
        print(f"blur-faces: {exc}")
        return 2
    print(report.describe())
    return 0 if report.ok else 1


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-ray", action="store_true", help="run the shards one by one in this process"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    urls = subparsers.add_parser(
        "ingest-urls", help="LAION / DataComp / Parquet URL lists -> candidates"
    )
    urls.add_argument("--format", required=True, choices=[*FORMATS, "parquet"])
    urls.add_argument(
        "--input", nargs="+", required=True, help="list Parquet files, folders or globs"
    )
    urls.add_argument(
        "--out", required=True, help="candidates folder (may be shared with extract's)"
    )
    urls.add_argument("--source", help="source name in the rows (default: the format)")
    urls.add_argument("--url-col", default="url", help="--format parquet: the URL column")
    urls.add_argument("--text-col", default="text", help="--format parquet: the caption column")
    urls.add_argument("--width-col", help="--format parquet: original width column")
    urls.add_argument("--height-col", help="--format parquet: original height column")
    urls.add_argument(
        "--keep", nargs="*", default=[], help="--format parquet: columns carried along"
    )
    _common(urls)
    urls.set_defaults(func=_ingest_urls_main)

    ground = subparsers.add_parser(
        "grounding", help="grounding datasets (native files) -> grounding shards"
    )
    ground.add_argument(
        "--format",
        required=True,
        choices=sorted(grounding_formats()),
        help="; ".join(f"{name}: {fmt.help}" for name, fmt in sorted(grounding_formats().items())),
    )
    ground.add_argument(
        "--images", required=True, help="image root the annotations' file names are under"
    )
    ground.add_argument(
        "--annotations", nargs="+", required=True, help="annotation files (globs allowed)"
    )
    ground.add_argument("--out", required=True, help="grounding shard folder")
    ground.add_argument("--source", help="name in the mix config (default: the format)")
    ground.add_argument("--samples-per-shard", type=int, default=5000)
    ground.add_argument(
        "--max-samples", type=int, help="quota: a seeded random subset of this many images"
    )
    ground.add_argument(
        "--exclude-coco-ids",
        nargs="*",
        help=f"JSON lists of COCO ids to leave out (e.g. a refcoco run's {DECONTAMINATION_FILE})",
    )
    ground.add_argument(
        "--box-convention", help="override the dataset's box convention, e.g. xyxy-pixel"
    )
    ground.add_argument("--max-side", type=int, help="downscale images whose longer side is larger")
    ground.add_argument(
        "--mix-config", help="mix file to record this source in (and read its quota from)"
    )
    _common(ground)
    ground.set_defaults(func=_grounding_main)

    blur = subparsers.add_parser(
        "blur-faces", help="blur given face boxes in a downloaded pool, in place"
    )
    blur.add_argument("--pool", required=True)
    blur.add_argument(
        "--face-boxes",
        nargs="+",
        required=True,
        help="ingest-urls output (folders/files) whose face_bboxes are used, joined by URL",
    )
    blur.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        default="keep_ratio_largest",
        help="the resize mode the pool was downloaded with",
    )
    blur.add_argument("--method", choices=face_blur.METHODS, default="gaussian")
    _common(blur)
    blur.set_defaults(func=_blur_main)
