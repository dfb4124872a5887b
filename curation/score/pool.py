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
from training.data.tars import iter_tar_samples

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


def iter_samples(
    url: str, extensions: tuple[str, ...] = ("jpg", "txt", "json")
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of a pool tar (training.data.tars' reader and
    key rule), only the given extensions kept.

    A tar cut short ends the iteration (what was read before stays valid); the caller notices the
    keys that never came.
    """
    try:
        for sample in iter_tar_samples(url):
            yield sample.key, {e: d for e, d in sample.files.items() if e in extensions}
    except (tarfile.TarError, EOFError):
        return
