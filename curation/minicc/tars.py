"""Deterministic WebDataset tar writing (fixed mtime, owner and order, so builds are byte-equal)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

Sample = tuple[str, dict[str, bytes]]  # (key, {extension: bytes})


def write_tar(path: Path, samples: list[Sample]) -> None:
    """Write `samples` as KEY.EXT members; each sample's extensions in sorted order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            if "." in key:
                raise ValueError(f"{path}: sample key {key!r} must not contain '.'")
            for extension in sorted(members):
                data = members[extension]
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    temporary.replace(path)
