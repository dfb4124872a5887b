"""Deterministic WebDataset tar members: fixed mtime and mode, so a re-run writes identical bytes."""

from __future__ import annotations

import io
import tarfile

MEMBER_MTIME = 0
MEMBER_MODE = 0o644


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), MEMBER_MTIME, MEMBER_MODE
    archive.addfile(info, io.BytesIO(data))
