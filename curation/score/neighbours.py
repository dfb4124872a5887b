"""Near-duplicate search over saved embeddings and pixel signatures, and clustering of the matches.

Embeddings are unit vectors, so inner product = cosine. The index kind trades exactness for
memory and time: `flat` is exact (O(n^2) work, fine to ~1M), `ivf` probes a few of sqrt(n)-ish
lists, `hnsw` walks a graph; `auto` takes flat up to FLAT_LIMIT vectors. faiss-gpu is used for
flat/IVF when it is importable and sees a GPU. The same search serves the CLIP embeddings and the
pixel signatures. Matches become clusters with a union-find.
"""

from __future__ import annotations

import math

import numpy as np

FLAT_LIMIT = 1_000_000


def _faiss():
    import faiss

    return faiss


def _maybe_gpu(index):
    faiss = _faiss()
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def build_index(vectors: np.ndarray, kind: str = "auto", seed: int = 0):
    """An inner-product faiss index holding `vectors` (float32, unit rows)."""
    faiss = _faiss()
    n, dim = vectors.shape
    if kind == "auto":
        kind = "flat" if n <= FLAT_LIMIT else "ivf"
    if kind == "flat":
        index = _maybe_gpu(faiss.IndexFlatIP(dim))
    elif kind == "ivf":
        lists = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if n > 256 * lists:
            sample = vectors[np.random.default_rng(seed).choice(n, 256 * lists, replace=False)]
        index.train(sample)
        index.nprobe = min(lists, 16)
        index = _maybe_gpu(index)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    else:
        raise ValueError(f"unknown index kind {kind!r} (flat, ivf, hnsw, auto)")
    index.add(vectors)
    return index


def similar_pairs(
    vectors: np.ndarray, threshold: float, kind: str = "auto", k: int = 16, batch: int = 65536
) -> np.ndarray:
    """[m, 2] row pairs (i < j) whose cosine is >= threshold, among each row's k nearest."""
    if len(vectors) < 2:
        return np.empty((0, 2), dtype=np.int64)
    index = build_index(vectors, kind)
    k = min(k, len(vectors))
    found = []
    for start in range(0, len(vectors), batch):
        sims, ids = index.search(vectors[start : start + batch], k)
        rows = np.arange(start, start + len(sims))[:, None].repeat(k, axis=1)
        hit = (sims >= threshold) & (ids >= 0) & (ids != rows)
        found.append(np.stack([rows[hit], ids[hit]], axis=1))
    return _canonical_pairs(np.concatenate(found))


def nearest(
    queries: np.ndarray, references: np.ndarray, kind: str = "flat"
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, index) of each query's nearest reference vector."""
    if len(references) == 0:
        return np.full(len(queries), -np.inf, np.float32), np.full(len(queries), -1, np.int64)
    sims, ids = build_index(references, kind).search(queries, 1)
    return sims[:, 0], ids[:, 0]


def nearest_k(
    queries: np.ndarray, references: np.ndarray, k: int, kind: str = "flat"
) -> tuple[np.ndarray, np.ndarray]:
    """[n, k] cosines and indices of each query's k nearest reference vectors (best first; -1 pads)."""
    k = max(1, min(k, len(references)))
    if len(references) == 0 or len(queries) == 0:
        return (
            np.full((len(queries), k), -np.inf, np.float32),
            np.full((len(queries), k), -1, np.int64),
        )
    return build_index(references, kind).search(queries, k)


def _canonical_pairs(pairs: np.ndarray) -> np.ndarray:
    if len(pairs) == 0:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.sort(pairs.astype(np.int64), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0)


def equal_value_pairs(values: list[str | None]) -> np.ndarray:
    """Pairs chaining together all rows with the same non-null value (e.g. identical sha256)."""
    first_row: dict[str, int] = {}
    pairs = []
    for row, value in enumerate(values):
        if value is None:
            continue
        if value in first_row:
            pairs.append((first_row[value], row))
        else:
            first_row[value] = row
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def union_find_roots(n: int, pairs: np.ndarray) -> np.ndarray:
    """The root of each row's connected component (components joined by `pairs`)."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], dtype=np.int64)
