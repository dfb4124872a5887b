"""Grounding records → the trainer's grounding shards (WebDataset `KEY.jpg` + `KEY.json`).

1. Plan (driver): the reader's images, minus evaluation images (decontamination) and images with
   no phrase, sorted by (source, image id); a quota keeps a seeded random subset. Rows carry the
   raw boxes and the box convention, and are cut into shards of --samples-per-shard. The plan is
   saved as OUT/_plan/grounding.parquet; a re-run into the same OUT must reproduce it.
2. Write ("grounding", per shard): read each image, normalise and clip its boxes (dropping
   unusable ones by reason), write `KEY.jpg` (the source JPEG as is, or re-encoded) and `KEY.json`
   `{"source", "licence", "image_id", "refs": [{"phrase", "box"}]}`, plus OUT/{shard}.parquet.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation import fsio
from curation.ingest.boxes import BoxConvention, normalise_box
from curation.ingest.formats import GroundingImage
from curation.ingest.licences import licence_of
from curation.runner import ShardContext, ShardTask
from curation.score.images import decode_rgb, fit_within, resize_and_encode
from training.data.tars import add_member

STAGE = "grounding"
PLAN = "_plan/grounding.parquet"
PLAN_RECORD = "_plan/grounding.json"
EVALUATION_IMAGE = "evaluation_image"
JPEG_MAGIC = b"\xff\xd8\xff"
PLAN_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("key", pa.string()),
        ("source", pa.string()),
        ("image_id", pa.string()),
        ("image_path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("phrases", pa.list_(pa.string())),
        ("boxes", pa.list_(pa.list_(pa.float64()))),
    ]
)
INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("image_id", pa.string()),
        ("refs", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
    ]
)


def _number_or_nan(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _raw_box(box: object) -> list[float]:
    """The box's four numbers for the plan; anything unreadable becomes NaN (dropped at write)."""
    if isinstance(box, (list, tuple)) and len(box) == 4:
        return [_number_or_nan(v) for v in box]
    return [float("nan")] * 4


def plan_grounding(
    images: Iterable[GroundingImage],
    samples_per_shard: int,
    *,
    exclude_coco_ids: Collection[int] = (),
    max_samples: int | None = None,
    seed: int = 0,
) -> tuple[pa.Table, Counter]:
    """The ordered, decontaminated, quota-limited plan; and the images dropped per reason."""
    drops: Counter = Counter()
    kept: list[GroundingImage] = []
    for image in images:
        if image.coco_id is not None and image.coco_id in exclude_coco_ids:
            drops[EVALUATION_IMAGE] += 1
        elif not image.phrases:
            drops["no_phrases"] += 1
        else:
            kept.append(image)
    kept.sort(key=lambda image: (image.source, image.image_id))
    if max_samples is not None and len(kept) > max_samples:
        drops["over_quota"] += len(kept) - max_samples
        chosen = np.sort(np.random.default_rng(seed).choice(len(kept), max_samples, replace=False))
        kept = [kept[i] for i in chosen]
    width = max(4, len(str(max(samples_per_shard - 1, 1))))
    columns: dict[str, list[Any]] = {name: [] for name in PLAN_SCHEMA.names}
    for position, image in enumerate(kept):
        shard = f"{position // samples_per_shard:05d}"
        columns["shard"].append(shard)
        columns["key"].append(f"{shard}{position % samples_per_shard:0{width}d}")
        columns["source"].append(image.source)
        columns["image_id"].append(image.image_id)
        columns["image_path"].append(image.image_path)
        columns["width"].append(_positive_int(image.width))
        columns["height"].append(_positive_int(image.height))
        columns["phrases"].append(image.phrases)
        columns["boxes"].append([_raw_box(box) for box in image.boxes])
    return pa.table(columns, schema=PLAN_SCHEMA), drops


def _positive_int(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def check_or_save_plan(out: str, plan: pa.Table, record: dict[str, Any]) -> None:
    """Save the plan, or insist an earlier (partial) run into this folder made the same one."""
    url = fsio.join(out, PLAN)
    if fsio.exists(url):
        if not fsio.read_parquet(url).equals(plan):
            raise fsio.PlanMismatchError(
                f"{out} holds grounding shards planned from other inputs or settings; "
                "use a new --out (or delete it)"
            )
        return
    with fsio.open_atomic(url) as handle:
        pq.write_table(plan, handle)
    fsio.write_json(fsio.join(out, PLAN_RECORD), record)


def training_jpeg(
    data: bytes, max_side: int | None
) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """JPEG bytes for the shard, the source image's size and the stored size.

    A JPEG within `max_side` is kept byte for byte; anything else is re-encoded (downscaled).
    """
    with Image.open(io.BytesIO(data)) as image:
        size = image.size
        is_jpeg = image.format == "JPEG" and data.startswith(JPEG_MAGIC)
        too_big = max_side is not None and max(size) > max_side
        if is_jpeg and not too_big:
            return data, size, size
        target = fit_within(size, max_side) if too_big else size
        # The filter and reducing gap of Pillow's thumbnail(), which this writer used at first.
        jpeg, stored = resize_and_encode(
            decode_rgb(image), target, 95, Image.Resampling.LANCZOS, reducing_gap=2.0
        )
        return jpeg, size, stored.size


def normalised_refs(
    row: dict[str, Any], convention: BoxConvention, width: int, height: int, box_drops: Counter
) -> list[dict[str, Any]]:
    refs = []
    for phrase, box in zip(row["phrases"], row["boxes"]):
        normalised, reason = normalise_box(box, convention, width, height)
        if reason is not None:
            box_drops[reason] += 1
            continue
        refs.append({"phrase": phrase, "box": normalised})
    return refs


@dataclass(frozen=True)
class WriteGroundingShard:
    plan_url: str
    images_root: str
    convention: BoxConvention
    max_side: int | None = None

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        rows = fsio.read_parquet(self.plan_url, filters=[("shard", "=", task.shard_id)]).to_pylist()
        ctx.stats.rows_in = len(rows)
        box_drops: Counter = Counter()
        index: dict[str, list[Any]] = {name: [] for name in INDEX_SCHEMA.names}
        with (
            ctx.open_output(f"{task.shard_id}.tar") as handle,
            tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as archive,
        ):
            for row in rows:
                image_url = fsio.join(self.images_root, row["image_path"])
                try:
                    data = fsio.read_bytes(image_url)
                    jpeg, (source_width, source_height), (width, height) = training_jpeg(
                        data, self.max_side
                    )
                except FileNotFoundError:
                    ctx.stats.drop("missing_image")
                    ctx.stats.error("missing_image", image_url, "no such file")
                    continue
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    ctx.stats.drop("undecodable_image")
                    ctx.stats.error("undecodable_image", image_url, str(exc))
                    continue
                # Pixel boxes refer to the image the annotators saw: the annotation's size when it
                # gives one (the file may have been resized since), else the source file's.
                frame = (row["width"] or source_width, row["height"] or source_height)
                refs = normalised_refs(row, self.convention, *frame, box_drops)
                if not refs:
                    ctx.stats.drop("no_valid_refs")
                    continue
                meta = {
                    "source": row["source"],
                    "licence": licence_of(row["source"]),
                    "image_id": row["image_id"],
                    "refs": refs,
                }
                add_member(archive, f"{row['key']}.jpg", jpeg)
                add_member(
                    archive,
                    f"{row['key']}.json",
                    json.dumps(meta, ensure_ascii=False, sort_keys=True).encode(),
                )
                for name, value in (
                    ("key", row["key"]),
                    ("source", row["source"]),
                    ("image_id", row["image_id"]),
                    ("refs", len(refs)),
                    ("width", width),
                    ("height", height),
                    ("sha256", hashlib.sha256(jpeg).hexdigest()),
                ):
                    index[name].append(value)
                ctx.stats.bytes_in += len(data)
        ctx.write_parquet(f"{task.shard_id}.parquet", pa.table(index, schema=INDEX_SCHEMA))
        ctx.stats.rows_out = len(index["key"])
        ctx.stats.extra["boxes_dropped"] = dict(box_drops)
        ctx.stats.extra["refs_written"] = int(sum(index["refs"]))
