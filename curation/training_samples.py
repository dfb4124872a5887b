"""The kept pool rows as training samples: which rows a training set keeps, how each sample is
encoded, and how one output shard is written (`shards` drives these; see its docstring).

A training shard is a WebDataset tar (`KEY.jpg`, `KEY.txt`, `KEY.json`) plus a Parquet index
with img2dataset's `status` column; each sample's JSON carries the sha256 of its stored JPEG.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from curation import fsio
from curation.download.shard_writer import JpegSpool
from curation.runner import ShardContext, ShardTask
from curation.score.images import ImageDecodeError, decode_rgb, resize_and_encode
from curation.score.pool import read_sidecar
from curation.shuffle import DEST, ShufflePlan, check_inputs, iter_batches
from training.data.tars import TAR_FORMAT, add_member

KEEP_COLUMNS = {
    "balance": ("keep_balance",),
    "score": ("keep_score",),
    "neardup": ("keep_dedup", "!contaminated"),
    "debias": ("keep_debias",),
    "langmix": ("keep_langmix",),
    "nsfw": ("keep_nsfw",),
}
ORDER = "order"
# A kept sample on its way through the shuffle: destination, order hash, metadata, encoded JPEG.
SHUFFLE_SCHEMA = pa.schema(
    [
        (DEST, pa.int64()),
        (ORDER, pa.uint64()),
        ("uid", pa.string()),
        ("source_shard", pa.string()),
        ("source_key", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("sha256", pa.string()),
        ("jpg", pa.binary()),
    ]
)
METADATA_COLUMNS = [name for name in SHUFFLE_SCHEMA.names if name != "jpg"]
INDEX_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("status", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("sha256", pa.string()),
        ("source_shard", pa.string()),
        ("source_key", pa.string()),
    ]
)


def shard_keep_mask(
    pool: str, shard_id: str, uids: pa.Array, applied: list[str]
) -> tuple[np.ndarray, dict[str, int]]:
    """Keep mask over the shard's successful rows, and how many each stage removed."""
    keep = np.ones(len(uids), dtype=bool)
    removed: dict[str, int] = {}
    for stage in applied:
        url = fsio.join(pool, "curation", stage, f"{shard_id}.parquet")
        if not fsio.exists(url):
            raise FileNotFoundError(f"{url} is missing (stage {stage} ran on other shards only)")
        table = fsio.read_parquet(url)
        by_uid = dict(zip(table["uid"].to_pylist(), range(table.num_rows)))
        index = np.array([by_uid.get(uid, -1) for uid in uids.to_pylist()], dtype=np.int64)
        stage_keep = index >= 0
        for column in KEEP_COLUMNS[stage]:
            negate = column.startswith("!")
            values = table[column.lstrip("!")].to_numpy(zero_copy_only=False).astype(bool)
            values = ~values if negate else values
            stage_keep &= np.where(index >= 0, values[np.maximum(index, 0)], False)
        removed[stage] = int(np.count_nonzero(keep & ~stage_keep))
        keep &= stage_keep
    return keep, removed


def kept_rows(pool: str, shard_id: str, sidecar: str, applied: list[str]) -> pa.Table:
    rows = read_sidecar(sidecar, ["uid", "key", "url", "text", "original_width", "original_height"])
    keep, _removed = shard_keep_mask(pool, shard_id, rows["uid"], applied)
    return rows.filter(pa.array(keep))


def resize_for_training(data: bytes, short_side: int, quality: int = 90) -> tuple[bytes, int, int]:
    """Downscale so the shorter side is `short_side` (never upscale; small images keep their
    bytes); re-encode as JPEG. Decoding always happens, so a corrupt image is caught here."""
    image = decode_rgb(data, min_side=short_side)  # may come back DCT-downscaled (draft)
    original_width, original_height = Image.open(io.BytesIO(data)).size
    if min(original_width, original_height) <= short_side:
        return data, original_width, original_height
    scale = short_side / min(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    jpeg, resized = resize_and_encode(
        image, size, quality, Image.Resampling.BICUBIC, reducing_gap=3.0
    )
    return jpeg, resized.size[0], resized.size[1]


def encode_sample(members: dict[str, bytes], image_size: int | None) -> tuple[bytes, int, int]:
    if "jpg" not in members:
        raise ImageDecodeError("no .jpg member")
    if image_size is None:
        image = decode_rgb(members["jpg"])
        return members["jpg"], image.size[0], image.size[1]
    return resize_for_training(members["jpg"], image_size)


def key_width(samples_per_shard: int, rows: int) -> int:
    return max(4, len(str(samples_per_shard - 1)), len(str(rows - 1)))


@dataclass(frozen=True)
class WriteTrainingShard:
    """The last step: one output shard from its <= fan files, in hash order."""

    root: str  # the shuffle folder, relative to the stage's out_dir
    plan: ShufflePlan
    samples_per_shard: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        dest = int(task.shard_id)
        root = fsio.join(ctx.out_dir, self.root)
        urls = self.plan.files(root, self.plan.levels, dest, self.plan.final_sources())
        check_inputs(urls)
        metadata: list[dict[str, Any]] = []
        with JpegSpool() as spool:
            for table in iter_batches(urls):
                jpgs = table["jpg"].to_pylist()
                for row, jpg in zip(table.select(METADATA_COLUMNS).to_pylist(), jpgs):
                    if row[DEST] != dest:
                        raise ValueError(f"row {row['uid']} of shard {dest} routed to {row[DEST]}")
                    metadata.append({**row, "jpg": spool.add(jpg)})
            metadata.sort(key=lambda row: (row[ORDER], row["uid"]))
            self._write(ctx, metadata, spool)
        ctx.stats.extra.update(files_read=len(urls), files_written=2)

    def _write(self, ctx: ShardContext, rows: list[dict[str, Any]], spool: JpegSpool) -> None:
        ctx.stats.rows_in = ctx.stats.rows_out = len(rows)
        width = key_width(self.samples_per_shard, len(rows))
        index: list[dict[str, Any]] = []
        with (
            ctx.open_output(f"{ctx.shard_id}.tar") as handle,
            tarfile.open(fileobj=handle, mode="w", format=TAR_FORMAT) as archive,
        ):
            for position, row in enumerate(rows):
                key = f"{ctx.shard_id}{position:0{width}d}"
                record = {name: row[name] for name in INDEX_SCHEMA.names if name in row}
                record.update(key=key)
                jpg = spool.read(row["jpg"])
                add_member(archive, f"{key}.jpg", jpg)
                add_member(archive, f"{key}.txt", (row["text"] or "").encode())
                add_member(archive, f"{key}.json", json.dumps(record, sort_keys=True).encode())
                index.append({**record, "status": "success"})
                ctx.stats.bytes_in += len(jpg)
        ctx.write_parquet(
            f"{ctx.shard_id}.parquet", pa.Table.from_pylist(index, schema=INDEX_SCHEMA)
        )
