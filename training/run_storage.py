"""A run folder is an fsspec URL: a local path, s3://bucket/run, gs://bucket/run, ...

The trainer writes checkpoints straight to the URL and keeps logs in a local folder that it
copies there (see training.metrics_log). These helpers are what it needs: join, read and write
whole small files (atomically: temp name + rename on disk, one PUT on object stores), list and
delete, and copy a local file or folder up or down. (The curation side has its own helpers;
training never imports curation.)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem


def filesystem(url: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(str(url))


def is_local(url: str | os.PathLike) -> bool:
    return isinstance(filesystem(url)[0], LocalFileSystem)


def join(url: str | os.PathLike, *parts: str) -> str:
    return "/".join([str(url).rstrip("/"), *parts])


def exists(url: str | os.PathLike) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def read_bytes(url: str | os.PathLike) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def read_text(url: str | os.PathLike) -> str:
    return read_bytes(url).decode()


def write_bytes(url: str | os.PathLike, data: bytes) -> None:
    """Write a whole file so that readers see the old content or the new, never a part."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    else:
        fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all


def write_text(url: str | os.PathLike, text: str) -> None:
    write_bytes(url, text.encode())


def list_names(url: str | os.PathLike) -> list[str]:
    """Names directly under a folder URL (empty if it does not exist)."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def remove(url: str | os.PathLike) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def upload(local: Path, url: str) -> None:
    """Copy a local file or folder (recursively) to `url`; a no-op if they are the same place."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem) and Path(path).resolve() == local.resolve():
        return
    if local.is_dir():
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.put_file(str(file), join(path, *file.relative_to(local).parts))
    elif local.exists():
        fs.put_file(str(local), path)


def download(url: str, local: Path) -> bool:
    """Copy a remote file or folder to `local`; returns whether there was anything to copy."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return False
    if fs.isdir(path):
        for remote in fs.find(path):
            target = local / os.path.relpath(remote, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(local))
    return True


def local_mirror(url: str) -> Path:
    """Where a run logs before it syncs to `url`: the folder itself when it is local, else a
    folder under the system temp dir named after the URL (so a resume on the same machine finds
    its TensorBoard files; a resume elsewhere downloads them)."""
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    digest = hashlib.sha256(str(url).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "training-runs" / digest
