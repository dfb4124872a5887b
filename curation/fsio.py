"""Paths are fsspec URLs: the same calls read and write local folders, s3:// and http://.

Outputs are committed atomically. On a local disk that means: write a temporary sibling, then
`os.replace` it over the final name. On object stores an object only becomes visible once its
single PUT (or multipart upload) completes, so writing the final key directly is already atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

# The URL basics are shared with the trainer's run folders (training never imports curation, so
# their one home is there): the filesystem of a URL, exists, read_bytes, and remove (a file or a
# whole folder; nothing there is not an error).
from training.run_storage import exists, filesystem, read_bytes, remove  # noqa: F401 (re-exported)

TMP_MARK = ".tmp-"


def join(base: str, *parts: str) -> str:
    """Join URL parts with '/', keeping the scheme of `base`."""
    return posixpath.join(base.rstrip("/") if base not in ("/", "") else base, *parts)


def makedirs(url: str) -> None:
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(path, exist_ok=True)


def expand(patterns: str | list[str]) -> list[str]:
    """Expand globs (and brace ranges like {00000..00009}) into a sorted list of URLs."""
    if isinstance(patterns, str):
        patterns = [patterns]
    urls: list[str] = []
    for pattern in patterns:
        for braced in _expand_braces(pattern):
            if any(ch in braced for ch in "*?["):
                fs, path = filesystem(braced)
                protocol = _protocol_prefix(braced)
                urls.extend(protocol + p if protocol else p for p in sorted(fs.glob(path)))
            else:
                urls.append(braced)
    return urls


def _expand_braces(pattern: str) -> list[str]:
    """Expand `{a..b}` numeric ranges (zero padding kept) and `{x,y}` alternatives."""
    import braceexpand

    return list(braceexpand.braceexpand(pattern))


def _protocol_prefix(url: str) -> str:
    if "://" in url:
        return url.split("://", 1)[0] + "://"
    return ""


@contextlib.contextmanager
def open_atomic(url: str, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open `url` for writing; the content appears under its name only if the block succeeds."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory or ".", exist_ok=True)
        tmp = os.path.join(directory, f"{os.path.basename(path)}{TMP_MARK}{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        # A remote object is visible only once the upload completes; an exception inside the
        # block must abort the upload rather than commit a partial object.
        handle = fs.open(path, mode)
        try:
            yield handle
        except BaseException:
            discard = getattr(handle, "discard", None)
            if discard is not None:
                discard()
                handle.closed = True  # discarded: nothing left to flush when it is collected
            raise
        handle.close()


def write_bytes(url: str, data: bytes) -> None:
    with open_atomic(url, "wb") as handle:
        handle.write(data)


def write_json(url: str, record: Any) -> None:
    write_bytes(url, json.dumps(record, indent=1, sort_keys=True, default=str).encode())


def read_json(url: str, expect: type | None = None) -> Any:
    """Parse a JSON file; with `expect` (dict, list), a value of another type raises ValueError
    naming the file."""
    value = json.loads(read_bytes(url))
    if expect is not None and not isinstance(value, expect):
        raise ValueError(f"{url}: expected a JSON {expect.__name__}, got {type(value).__name__}")
    return value


def read_parquet(url: str, columns: list[str] | None = None, filters: Any = None) -> pa.Table:
    """Read a Parquet file (or a selection of its columns / rows by `filters`) from any URL."""
    fs, path = filesystem(url)
    return pq.read_table(path, filesystem=fs, columns=columns, filters=filters)


class PlanMismatchError(ValueError):
    """An output folder was planned from other inputs or settings than this run's."""


def check_plan(url: str, plan: Any, what: str) -> None:
    """Record `plan` (a JSON value) at `url`, or insist the one already there is equal: a folder
    belongs to one set of inputs and settings, and a re-run must not mix two."""
    if exists(url):
        if read_json(url) != json.loads(json.dumps(plan, sort_keys=True, default=str)):
            raise PlanMismatchError(
                f"{what} was planned from other inputs or settings (see {url}); "
                "write to a new --out, or delete it to start over"
            )
        return
    write_json(url, plan)


def remove_stale_temporaries(url: str) -> int:
    """Delete temporary files a killed run left under a local folder; returns how many."""
    fs, path = filesystem(url)
    if not isinstance(fs, LocalFileSystem) or not os.path.isdir(path):
        return 0
    removed = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if TMP_MARK in name:
                os.remove(os.path.join(root, name))
                removed += 1
    return removed
