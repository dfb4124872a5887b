"""The pool rows a resampling stage works on: a shard's successes that the stages it runs after
keep, so its targets hold among the rows `shards --require AFTER,STAGE` writes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.score.pool import read_sidecar
from curation.stages.common import ConfigError
from curation.training_samples import KEEP_COLUMNS, shard_keep_mask


def applied_stages(pool: str, after: Sequence[str], stage: str) -> list[str]:
    """The stages of `after` that ran on the pool (their keep columns are applied first)."""
    unknown = [name for name in after if name not in KEEP_COLUMNS or name == stage]
    if unknown:
        known = sorted(set(KEEP_COLUMNS) - {stage})
        raise ConfigError(f"{stage}: unknown --after stage(s) {unknown}; known: {known}")
    return [name for name in after if fsio.exists(fsio.join(pool, "curation", name))]


def pool_columns(sidecar: str) -> list[str]:
    fs, path = fsio.filesystem(sidecar)
    return pq.read_schema(path, filesystem=fs).names


def shard_rows(
    pool: str, shard_id: str, sidecar: str, columns: list[str], after: Sequence[str]
) -> tuple[pa.Table, np.ndarray]:
    """The shard's successful rows (`uid` and `columns`) and which of them the `after` stages
    keep."""
    rows = read_sidecar(sidecar, list(dict.fromkeys(["uid", *columns])))
    keep, _removed = shard_keep_mask(pool, shard_id, rows["uid"], list(after))
    return rows, keep
