"""Read WebDataset tar shards as a stream of samples.

A WebDataset sample is the run of consecutive tar members sharing a key: `KEY.jpg`, `KEY.txt`,
`KEY.json` become one sample `{"jpg": ..., "txt": ..., "json": ...}`. The key is the member path
up to the first dot of its file name, as in the webdataset library, so keys may contain folders.
The tar is read as a stream (`r|*`), which works the same for local files, s3:// and http://.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec


@dataclass
class RawSample:
    key: str
    files: dict[str, bytes]


def split_member_name(name: str) -> tuple[str, str]:
    """`dir/abc.seg.jpg` → (`dir/abc`, `seg.jpg`)."""
    folder, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(folder, stem) if folder else stem, extension.lower()


def iter_tar_samples(url: str) -> Iterator[RawSample]:
    """Yield the samples of one tar shard in file order.

    A truncated or corrupt tar raises `tarfile.TarError` (or `EOFError`/`OSError`) after the
    samples read so far have been yielded; the caller decides what to do with the rest.
    """
    with fsspec.open(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as archive:
        current: RawSample | None = None
        for member in archive:
            if not member.isfile():
                continue
            key, extension = split_member_name(member.name)
            if key.startswith("__") or not extension:  # tar-level metadata, not sample files
                continue
            payload = archive.extractfile(member)
            data = payload.read() if payload is not None else b""
            if len(data) != member.size:  # a stream cut mid-file ends quietly in tarfile
                raise tarfile.ReadError(
                    f"member {member.name} truncated ({len(data)}/{member.size} bytes)"
                )
            if current is not None and current.key != key:
                yield current
                current = None
            if current is None:
                current = RawSample(key, {})
            current.files[extension] = data
        if current is not None:
            yield current
