"""Stage `blur-faces`: blur the given face boxes in a downloaded pool, in place.

    python -m curation blur-faces --pool POOL --face-boxes CANDIDATES

The face boxes come from a DataComp list's ingest-urls output (its `face_bboxes`, joined by URL);
see curation.ingest.face_blur. Run it before the curation stages: they read the blurred images.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq

from curation import fsio
from curation.download.imaging import RESIZE_MODES
from curation.download.plan import input_files
from curation.ingest import face_blur
from curation.runner import ShardTask, StageReport, run_stage
from curation.score.pool import list_pool_shards
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main


@dataclass(frozen=True)
class BlurFacesConfig:
    pool: str  # the downloaded pool, rewritten in place
    face_boxes: Sequence[str]  # ingest-urls output (folders/files) whose face_bboxes are used
    resize_mode: str = "keep_ratio_largest"  # the resize mode the pool was downloaded with
    method: str = "gaussian"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"blur-faces: unknown resize mode {self.resize_mode!r}")
        if self.method not in face_blur.METHODS:
            raise ConfigError(f"blur-faces: unknown blur method {self.method!r}")


def face_box_files(inputs: Sequence[str]) -> tuple[str, ...]:
    """The candidate files that carry face boxes (a DataComp list's ingest output)."""
    files = []
    for url in input_files(list(inputs)):
        fs, path = fsio.filesystem(url)
        with fs.open(path, "rb") as handle:
            if "face_bboxes" in pq.ParquetFile(handle).schema_arrow.names:
                files.append(url)
    if not files:
        raise ConfigError(f"blur-faces: no file with a face_bboxes column in {' '.join(inputs)}")
    return tuple(files)


def run(config: BlurFacesConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    tasks = [
        ShardTask(shard.shard_id, (shard.tar, shard.sidecar))
        for shard in list_pool_shards(config.pool)
    ]
    stage = face_blur.BlurPoolShard(
        face_box_files(config.face_boxes), config.resize_mode, config.method
    )
    report = run_stage(
        face_blur.STAGE,
        stage,
        tasks,
        config.pool,
        **options.stage_args(),
    )
    return [report]


def config_from_args(args: argparse.Namespace) -> BlurFacesConfig:
    return BlurFacesConfig(args.pool, tuple(args.face_boxes), args.resize_mode, args.method)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "blur-faces", help="blur given face boxes in a downloaded pool, in place"
    )
    parser.add_argument("--pool", required=True)
    parser.add_argument(
        "--face-boxes",
        nargs="+",
        required=True,
        help="ingest-urls output (folders/files) whose face_bboxes are used, joined by URL",
    )
    parser.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        default="keep_ratio_largest",
        help="the resize mode the pool was downloaded with",
    )
    parser.add_argument("--method", choices=face_blur.METHODS, default="gaussian")
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
