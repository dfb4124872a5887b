"""Reading a download pool: POOL/{shard}.tar (WebDataset) beside POOL/{shard}.parquet (sidecar).

The sidecar has a row for every input URL of the shard; the tar holds KEY.jpg / KEY.txt /
KEY.json for the successes. Readers here join the two by `key`, so a sample missing from the tar
(a truncated tar, a crashed writer) is reported instead of silently vanishing.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curation import fsio
from curation.stages.common import ConfigError

SHARD_ID = re.compile(r"^\d{5}$")
SUCCESS = "success"


class PoolError(ConfigError):
    """The pool folder is missing or does not follow the pool layout."""


@dataclass(frozen=True)
class PoolShard:
    shard_id: str
    tar: str
    sidecar: str


def list_pool_shards(pool: str) -> list[PoolShard]:
    """Every shard of the pool, sorted by id; a sidecar without its tar is an error."""
    sidecars = fsio.expand(fsio.join(pool, "*.parquet"))
    shards = []
    for sidecar in sidecars:
        shard_id = sidecar.rsplit("/", 1)[-1][: -len(".parquet")]
        if not SHARD_ID.match(shard_id):
            continue
        tar = fsio.join(pool, f"{shard_id}.tar")
        if not fsio.exists(tar):
            raise PoolError(f"pool {pool}: shard {shard_id} has a sidecar but no {tar}")
        shards.append(PoolShard(shard_id, tar, sidecar))
    if not shards:
        raise PoolError(f"pool {pool}: no shards (expected NNNNN.parquet + NNNNN.tar files)")
    return shards


def read_sidecar(
    url: str, columns: list[str] | None = None, successes_only: bool = True
) -> pa.Table:
    table = fsio.read_parquet(url, None if columns is None else sorted(set(columns) | {"status"}))
    if successes_only:
        table = table.filter(pc.equal(table["status"], SUCCESS))
    if columns is not None and "status" not in columns:
        table = table.drop_columns(["status"])
    return table


def iter_tar_members(url: str) -> Iterator[tuple[str, str, bytes]]:
    """(key, extension, bytes) for each file of a WebDataset tar, in tar order.

    A tar cut short ends the iteration (what was read before stays valid); the caller notices the
    keys that never came.
    """
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as archive:
        try:
            for member in archive:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                key, _, extension = name.partition(".")
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                yield key, extension, handle.read()
        except (tarfile.ReadError, EOFError):
            return


def iter_samples(
    url: str, extensions: tuple[str, ...] = ("jpg", "txt", "json")
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of a tar, members grouped by key."""
    current_key: str | None = None
    current: dict[str, bytes] = {}
    for key, extension, data in iter_tar_members(url):
        if key != current_key:
            if current_key is not None:
                yield current_key, current
            current_key, current = key, {}
        if extension in extensions:
            current[extension] = data
    if current_key is not None:
        yield current_key, current
