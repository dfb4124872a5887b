"""Blur faces inside given boxes (DataComp ships face boxes with every URL), in a pool in place.

`blur_regions` blurs (Gaussian) or pixelates the given normalised boxes of one image. Face boxes
are normalised to the *original* image; the pool stores a resized image, so `stored_frame_boxes`
maps them through the download's resize mode (same aspect: unchanged; center_crop and border:
shifted and scaled). `BlurPoolShard` rewrites one pool shard: every success whose URL has face
boxes gets them blurred, the tar and the sidecar (new sha256) are committed atomically by the
download's own shard writer. POOL/curation/blur_faces/{shard}.parquet, written first, records each
blurred sample's hash before and after; a re-run after a crash anywhere in between finds samples
already blurred by their hash and never blurs twice, so it ends with the same bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
from PIL import Image, ImageFilter

from curation import fsio
from curation.download.reasons import SUCCESS
from curation.download.shard_writer import (
    JpegSpool,
    read_sidecar,
    spool_existing_images,
    write_pool_shard,
)
from curation.ingest.boxes import pixel_box
from curation.runner import ShardContext, ShardTask
from curation.score.images import encode_jpeg

STAGE = "blur_faces"
METHODS = ("gaussian", "pixelate")
SAME_ASPECT_MODES = ("keep_ratio_largest", "keep_ratio", "no")
RECORD_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("faces_blurred", pa.int32()),
        ("sha256_before", pa.string()),
        ("sha256_after", pa.string()),
    ]
)


def blur_regions(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    method: str = "gaussian",
    strength: float = 0.15,
) -> Image.Image:
    """A copy of `image` with each normalised [x0, y0, x1, y1] box blurred beyond recognition.

    `strength` is relative to the box: the Gaussian radius (or the pixelation block) is that
    fraction of the box's shorter side, so a small face and a large one are equally unreadable.
    """
    if method not in METHODS:
        raise ValueError(f"blur method {method!r} is not one of {', '.join(METHODS)}")
    out = image.convert("RGB")
    for box in boxes:
        left, top, right, bottom = pixel_box(box, out.width, out.height)
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, out.width), min(bottom, out.height)
        if right <= left or bottom <= top:
            continue
        region = out.crop((left, top, right, bottom))
        scale = max(1.0, strength * min(region.width, region.height))
        if method == "gaussian":
            region = region.filter(ImageFilter.GaussianBlur(radius=scale))
        else:
            small = (max(1, round(region.width / scale)), max(1, round(region.height / scale)))
            region = region.resize(small, Image.Resampling.BOX).resize(
                region.size, Image.Resampling.NEAREST
            )
        out.paste(region, (left, top))
    return out


def _resize_affine(
    original: tuple[int, int], stored: tuple[int, int], resize_mode: str
) -> tuple[float, float, float]:
    """The resize as a uniform scale plus an offset (dx, dy) in stored pixels: center_crop scales
    the shorter side to the target and crops, border scales the longer side and pads (see
    curation.download.imaging)."""
    (ow, oh), (sw, sh) = original, stored
    scale = max(sw / ow, sh / oh) if resize_mode == "center_crop" else min(sw / ow, sh / oh)
    return scale, (sw - ow * scale) / 2, (sh - oh * scale) / 2


def _map_boxes(
    boxes: Sequence[Sequence[float]],
    original: tuple[int, int],
    stored: tuple[int, int],
    resize_mode: str,
    to_stored: bool,
) -> list[list[float]]:
    if resize_mode in SAME_ASPECT_MODES:
        return [list(map(float, box)) for box in boxes]
    (ow, oh), (sw, sh) = original, stored
    scale, dx, dy = _resize_affine(original, stored, resize_mode)
    if to_stored:  # x_stored = (x * ow * scale + dx) / sw
        ax, bx, ay, by = ow * scale / sw, dx / sw, oh * scale / sh, dy / sh
    else:  # the inverse: x = (x_stored * sw - dx) / (ow * scale)
        ax, bx, ay, by = (
            sw / (ow * scale),
            -dx / (ow * scale),
            sh / (oh * scale),
            -dy / (oh * scale),
        )
    mapped = [
        [box[0] * ax + bx, box[1] * ay + by, box[2] * ax + bx, box[3] * ay + by] for box in boxes
    ]
    return [[min(max(value, 0.0), 1.0) for value in box] for box in mapped]


def stored_frame_boxes(
    boxes: Sequence[Sequence[float]],
    original: tuple[int, int],
    stored: tuple[int, int],
    resize_mode: str,
) -> list[list[float]]:
    """Boxes normalised to the original image, re-normalised to the stored (resized) image (a
    crop cuts faces too: coordinates are clipped to the stored picture)."""
    return _map_boxes(boxes, original, stored, resize_mode, to_stored=True)


def original_frame_boxes(
    boxes: Sequence[Sequence[float]],
    original: tuple[int, int],
    stored: tuple[int, int],
    resize_mode: str,
) -> list[list[float]]:
    """The inverse of `stored_frame_boxes`: boxes found in the stored image, normalised to the
    original (a box in a border's padding is clipped to the picture)."""
    return _map_boxes(boxes, original, stored, resize_mode, to_stored=False)


def blur_jpeg(
    data: bytes, boxes: Sequence[Sequence[float]], method: str, quality: int = 95
) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        blurred = blur_regions(image, boxes, method)
    return encode_jpeg(blurred, quality)


def face_boxes_for(box_files: Sequence[str], urls: list[str]) -> dict[str, list[list[float]]]:
    """url -> face boxes, for the given URLs, from ingested candidates (`url`, `face_bboxes`)."""
    if not box_files or not urls:
        return {}
    dataset = ds.dataset(list(box_files), format="parquet")
    missing = [c for c in ("url", "face_bboxes") if c not in dataset.schema.names]
    if missing:
        raise ValueError(
            f"face boxes {box_files[0]}...: no column(s) {', '.join(missing)} "
            "(give the ingest-urls output of a DataComp list)"
        )
    table = dataset.to_table(columns=["url", "face_bboxes"], filter=ds.field("url").isin(urls))
    boxes: dict[str, list[list[float]]] = {}
    for url, faces in zip(table["url"].to_pylist(), table["face_bboxes"].to_pylist()):
        if faces:
            boxes.setdefault(url, [list(face) for face in faces if face and len(face) == 4])
    return boxes


@dataclass(frozen=True)
class BlurPoolShard:
    """Rewrite one pool shard with the faces of its successes blurred."""

    box_files: tuple[str, ...]
    resize_mode: str = "keep_ratio_largest"
    method: str = "gaussian"

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        pool = ctx.out_dir
        rows = read_sidecar(fsio.join(pool, f"{task.shard_id}.parquet"))
        successes = [row for row in rows if row["status"] == SUCCESS]
        faces = face_boxes_for(self.box_files, sorted({row["url"] for row in successes}))
        record_name = f"curation/{STAGE}/{task.shard_id}.parquet"
        done_before = _blurred_by_earlier_run(ctx.output_url(record_name))
        ctx.stats.rows_in = len(successes)
        record: dict[str, list] = {name: [] for name in RECORD_SCHEMA.names}
        images: dict[str, bytes] = {}
        with JpegSpool() as spool:
            stored = spool_existing_images(
                fsio.join(pool, f"{task.shard_id}.tar"), [row["key"] for row in successes], spool
            )
            for row in successes:
                if row["key"] not in stored:
                    raise ValueError(
                        f"{pool}/{task.shard_id}.tar lacks sample {row['key']} its sidecar lists"
                    )
                data = spool.read(stored[row["key"]])
                boxes = faces.get(row["url"])
                if not boxes:
                    images[row["key"]] = data
                    continue
                digest = hashlib.sha256(data).hexdigest()
                before, after = done_before.get(row["uid"], (digest, None))
                if digest != after:
                    frame = stored_frame_boxes(
                        boxes,
                        (row["original_width"], row["original_height"]),
                        (row["width"], row["height"]),
                        self.resize_mode,
                    )
                    data = blur_jpeg(data, frame, self.method)
                    after = hashlib.sha256(data).hexdigest()
                images[row["key"]] = data
                row["sha256"] = after
                for name, value in zip(
                    RECORD_SCHEMA.names, (row["uid"], len(boxes), before, after)
                ):
                    record[name].append(value)
        ctx.write_parquet(record_name, pa.table(record, schema=RECORD_SCHEMA))
        write_pool_shard(ctx.open_output, task.shard_id, rows, lambda row: images[row["key"]])
        ctx.stats.rows_out = len(record["uid"])
        ctx.stats.extra["faces_blurred"] = int(sum(record["faces_blurred"]))


def _blurred_by_earlier_run(url: str) -> dict[str, tuple[str, str]]:
    """uid -> (hash before, hash after) from an interrupted earlier run's record, if any."""
    if not fsio.exists(url):
        return {}
    table = fsio.read_parquet(url)
    return {
        uid: (before, after)
        for uid, before, after in zip(
            table["uid"].to_pylist(),
            table["sha256_before"].to_pylist(),
            table["sha256_after"].to_pylist(),
        )
    }
