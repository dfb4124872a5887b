"""WebDataset tar shards: the one module that reads and writes them (curation uses it too).

A WebDataset sample is the run of consecutive tar members sharing a key: `KEY.jpg`, `KEY.txt`,
`KEY.json` become one sample `{"jpg": ..., "txt": ..., "json": ...}`. The key is the member path
up to the first dot of its file name, as in the webdataset library, so keys may contain folders
but a key's file name has no dot. The tar is read as a stream (`r|*`), which works the same for
local files, s3:// and http://.

Members are written deterministically (mtime 0, mode 0644, owner 0 with no names, USTAR), so
writing the same samples twice gives the same bytes and a re-run of a stage is byte-identical.
This module lives in training, which never imports curation; curation imports it.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec

TAR_FORMAT = tarfile.USTAR_FORMAT
MEMBER_MTIME = 0
MEMBER_MODE = 0o644
Sample = tuple[str, dict[str, bytes]]  # (key, {extension: bytes}), as written


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


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one file, `KEY.EXTENSION`, with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), MEMBER_MTIME, MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    archive.addfile(info, io.BytesIO(data))


def add_sample(archive: tarfile.TarFile, key: str, files: dict[str, bytes]) -> None:
    """Append one sample: `KEY.EXTENSION` for each file, extensions in sorted order."""
    if "." in posixpath.basename(key):
        raise ValueError(f"sample key {key!r}: its file name must not contain '.'")
    for extension in sorted(files):
        add_member(archive, f"{key}.{extension}", files[extension])


def write_tar(path: Path, samples: list[Sample]) -> None:
    """Write a local tar of `samples` ((key, {extension: bytes})); it appears complete or not at
    all (written under a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with tarfile.open(temporary, "w", format=TAR_FORMAT) as archive:
        for key, files in samples:
            add_sample(archive, key, files)
    temporary.replace(path)
