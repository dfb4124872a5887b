"""What every near-dup pass shares: the per-row keep key, cluster ids, aspect ratios, and the row
files (vectors stored as raw fp16 bytes) that the passes hand each other."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from curation import fsio


def keep_keys(scores: np.ndarray, uids: list[str]) -> list[str]:
    """A string per row whose smallest value in a group names the row to keep: highest score
    first (unscored rows last), ties by smallest uid. 8 hex digits of an order-preserving
    encoding of -score, then the uid; so a plain `min` over strings applies the keep rule."""
    values = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float32) + np.float32(0)
    bits = values.view(np.uint32)
    ascending = np.where(bits & 0x80000000, ~bits, bits | 0x80000000).astype(np.uint32)
    descending = (0xFFFFFFFF - ascending.astype(np.uint64)).astype(np.uint32)
    return [f"{rank:08x}{uid}" for rank, uid in zip(descending.tolist(), uids)]


def key_uid(key: str) -> str:
    return key[8:]


def cluster_id(representative_uid: str) -> int:
    """dup_cluster: a non-negative int64 derived from the kept row's uid (stable everywhere)."""
    digest = hashlib.blake2b(representative_uid.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def log_aspect(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    width = np.asarray(width, dtype=np.float64)
    height = np.asarray(height, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            (width > 0) & (height > 0), width / np.where(height > 0, height, 1), np.nan
        )
        return np.log(ratio)


def aspect_agrees(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    """Elementwise: the two log aspect ratios are within `tolerance` (unknown ratios never block)."""
    close = np.abs(a - b) <= tolerance
    return close | np.isnan(a) | np.isnan(b)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1), dtype=np.float32)


def vector_column(vectors: np.ndarray) -> pa.Array:
    """[n, d] fp16 rows as a fixed-size binary column (2d bytes a row)."""
    rows = np.ascontiguousarray(vectors, dtype=np.float16)
    n, dim = rows.shape
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(2 * dim), n, [None, pa.py_buffer(rows.tobytes())]
    )


def column_vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """The inverse of `vector_column`, as float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.binary(2 * dim))
    if len(column) == 0:
        return np.zeros((0, dim), np.float32)
    data = np.frombuffer(column.buffers()[1], dtype=np.float16)
    start = column.offset * dim
    return data[start : start + len(column) * dim].reshape(len(column), dim).astype(np.float32)


def list_parquet(folder: str) -> list[str]:
    """The Parquet files directly in `folder`, sorted (none if it does not exist)."""
    if not fsio.exists(folder):
        return []
    return sorted(fsio.expand(fsio.join(folder, "*.parquet")))
