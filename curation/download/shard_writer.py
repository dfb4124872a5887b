"""Commit one pool shard: a WebDataset tar of the successes plus a Parquet row for every URL.

Images finish in whatever order the network allows; to make the tar identical on every run
(kill-and-resume must give the same bytes) the resized JPEGs are spooled to a local temporary
file as they arrive and the tar is written in key order at the end, with fixed member metadata.
The tar is committed before the sidecar, so a crash between the two leaves a sidecar that never
promises a sample the tar lacks.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, Self

import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.download.reasons import SUCCESS
from curation.tars import add_member

SIDECAR_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("texts", pa.list_(pa.string())),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("sha256", pa.string()),
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


def sample_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """KEY.json: the sidecar row, plus img2dataset's name for the caption."""
    return {**row, "caption": row["text"]}


def write_pool_shard(
    open_output: OpenOutput,
    shard_id: str,
    rows: list[dict[str, Any]],
    jpeg_of: Callable[[dict[str, Any]], bytes],
) -> None:
    """Write `{shard}.tar` (successes, in key order) then `{shard}.parquet` (every row)."""
    rows = sorted(rows, key=lambda row: row["key"])
    with (
        open_output(f"{shard_id}.tar") as handle,
        tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for row in rows:
            if row["status"] != SUCCESS:
                continue
            key = row["key"]
            add_member(tar, f"{key}.jpg", jpeg_of(row))
            add_member(tar, f"{key}.txt", (row["text"] or "").encode())
            add_member(
                tar, f"{key}.json", json.dumps(sample_metadata(row), sort_keys=True).encode()
            )
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in SIDECAR_SCHEMA.names} for row in rows],
        schema=SIDECAR_SCHEMA,
    )
    with open_output(f"{shard_id}.parquet") as handle:
        pq.write_table(table, handle, compression="zstd")


def read_sidecar(url: str) -> list[dict[str, Any]]:
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle).to_pylist()


def iter_tar_images(url: str, keys: set[str]) -> Iterator[tuple[str, bytes]]:
    """(key, JPEG bytes) for the wanted keys of an existing pool tar, streamed."""
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            key, _, extension = member.name.rpartition(".")
            if extension == "jpg" and key in keys:
                extracted = tar.extractfile(member)
                if extracted is not None:
                    yield key, extracted.read()


def spool_existing_images(
    url: str, keys: Iterable[str], spool: JpegSpool
) -> dict[str, tuple[int, int]]:
    return {key: spool.add(data) for key, data in iter_tar_images(url, set(keys))}
