"""Commit one pool shard: a WebDataset tar of the successes plus a Parquet row for every URL.

Images finish in whatever order the network allows; to make the tar identical on every run
(kill-and-resume must give the same bytes) the resized JPEGs are spooled to a local temporary
file as they arrive and the tar is written in key order at the end, with fixed member metadata.
The tar is committed before the sidecar, so a crash between the two leaves a sidecar that never
promises a sample the tar lacks.

The layout is img2dataset's (what DataComp and img2dataset users read): `{shard}.tar`,
`{shard}.parquet` with one row per input URL, and `{shard}_stats.json` with img2dataset's fields
(count, successes, failed_to_download, failed_to_resize, duration, start_time, end_time,
status_dict). The sidecar and KEY.json carry img2dataset's `caption` (equal to our `text`),
`exif` (exifread's tags of the downloaded bytes, as JSON, as img2dataset writes them; null for
failures) and `status` / `error_message` with img2dataset's values, beside our own columns.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, Self

import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.download.reasons import FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE, SUCCESS
from training.data.tars import TAR_FORMAT, add_member, iter_tar_samples

SIDECAR_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("caption", pa.string()),
        ("texts", pa.list_(pa.string())),
        ("lang", pa.string()),  # extract's language of the page (null when the input had none)
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("sha256", pa.string()),
        ("exif", pa.string()),
        ("host", pa.string()),
        ("download_bytes", pa.int64()),
    ]
)

OpenOutput = Callable[[str], AbstractContextManager[BinaryIO]]


class JpegSpool:
    """Append-only local scratch file for encoded images, readable back by (offset, length)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="pool-spool-")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._end = 0

    def add(self, data: bytes) -> tuple[int, int]:
        with self._lock:
            offset = self._end
            self._file.seek(offset)
            self._file.write(data)
            self._end += len(data)
        return offset, len(data)

    def read(self, location: tuple[int, int]) -> bytes:
        with self._lock:
            self._file.seek(location[0])
            return self._file.read(location[1])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def exif_json(data: bytes) -> str | None:
    """img2dataset's `exif`: the image's EXIF tags read by exifread (no maker notes or thumbnail),
    as a JSON object of strings; None when the bytes cannot be parsed."""
    import exifread

    # exifread logs a warning for every image that is not JPEG, TIFF, WebP or HEIC ("File
    # format not recognized."): one line per PNG or GIF in every worker's log. Those get {}.
    logging.getLogger("exifread").setLevel(logging.ERROR)
    try:
        tags = exifread.process_file(io.BytesIO(data), details=False)
        return json.dumps(
            {key: str(value).strip() for key, value in tags.items() if value is not None}
        )
    except Exception:  # noqa: BLE001 - img2dataset records unreadable EXIF as null, never fails
        return None


def shard_counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """img2dataset's per-shard counts: every row is exactly one of success / failed_to_*, and
    status_dict counts error messages (successes under "success")."""
    statuses = Counter(row["status"] for row in rows)
    status_dict = Counter(row.get("error_message") or SUCCESS for row in rows)
    return {
        "count": len(rows),
        "successes": statuses[SUCCESS],
        "failed_to_download": statuses[FAILED_TO_DOWNLOAD],
        "failed_to_resize": statuses[FAILED_TO_RESIZE],
        "status_dict": dict(sorted(status_dict.items())),
    }


def shard_stats(rows: list[dict[str, Any]], start_time: float, end_time: float) -> dict[str, Any]:
    """`{shard}_stats.json` with img2dataset's fields, in its order."""
    counts = shard_counts(rows)
    status_dict = counts.pop("status_dict")
    timing = {"duration": end_time - start_time, "start_time": start_time, "end_time": end_time}
    return {**counts, **timing, "status_dict": status_dict}


def write_pool_shard(
    open_output: OpenOutput,
    shard_id: str,
    rows: list[dict[str, Any]],
    jpeg_of: Callable[[dict[str, Any]], bytes],
    start_time: float | None = None,
) -> None:
    """Write `{shard}.tar` (successes, in key order), `{shard}_stats.json`, then
    `{shard}.parquet` (every row). `start_time` (epoch seconds) is when work on the shard began
    (default: now)."""
    start_time = time.time() if start_time is None else start_time
    rows = [{**row, "caption": row["text"]} for row in sorted(rows, key=lambda row: row["key"])]
    with (
        open_output(f"{shard_id}.tar") as handle,
        tarfile.open(fileobj=handle, mode="w", format=TAR_FORMAT) as tar,
    ):
        for row in rows:
            if row["status"] != SUCCESS:
                continue
            key = row["key"]
            add_member(tar, f"{key}.jpg", jpeg_of(row))
            add_member(tar, f"{key}.txt", (row["text"] or "").encode())
            add_member(tar, f"{key}.json", json.dumps(row, sort_keys=True).encode())
    with open_output(f"{shard_id}_stats.json") as handle:
        stats = shard_stats(rows, start_time, time.time())
        handle.write(json.dumps(stats, indent=4).encode())
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in SIDECAR_SCHEMA.names} for row in rows],
        schema=SIDECAR_SCHEMA,
    )
    with open_output(f"{shard_id}.parquet") as handle:
        pq.write_table(table, handle, compression="zstd")


def read_sidecar(url: str) -> list[dict[str, Any]]:
    return fsio.read_parquet(url).to_pylist()


def iter_tar_images(url: str, keys: set[str]) -> Iterator[tuple[str, bytes]]:
    """(key, JPEG bytes) for the wanted keys of an existing pool tar, streamed."""
    for sample in iter_tar_samples(url):
        if sample.key in keys and "jpg" in sample.files:
            yield sample.key, sample.files["jpg"]


def spool_existing_images(
    url: str, keys: Iterable[str], spool: JpegSpool
) -> dict[str, tuple[int, int]]:
    return {key: spool.add(data) for key, data in iter_tar_images(url, set(keys))}
