"""k-means centroids on a bounded sample (faiss, CPU) and the assignment of rows to their nearest
centroids. Vectors are unit rows, so nearest = highest inner product (spherical k-means, as in
SemDeDup)."""

from __future__ import annotations

import numpy as np

# faiss itself subsamples beyond this many points per centroid; we never hand it more.
POINTS_PER_CENTROID = 256
MIN_POINTS_PER_CENTROID = 8


def centroid_count(rows: int, border: int, target_rows: int, sample_rows: int) -> int:
    """Centroids so that a cluster holds ~target_rows rows (each row sits in `border` clusters),
    as many as a sample of `sample_rows` can train."""
    wanted = -(-rows * border // max(1, target_rows))
    return int(max(1, min(wanted, sample_rows // MIN_POINTS_PER_CENTROID)))


def train_centroids(sample: np.ndarray, k: int, seed: int, iterations: int = 20) -> np.ndarray:
    """[k', d] unit centroids (k' = min(k, distinct sample rows)); deterministic for one sample."""
    import faiss

    sample = np.ascontiguousarray(sample, dtype=np.float32)
    k = int(max(1, min(k, len(sample))))
    if k == 1 or len(sample) <= k:
        centroids = sample[:k] if len(sample) else np.zeros((1, sample.shape[1]), np.float32)
        return _unit(centroids)
    limit = min(len(sample), POINTS_PER_CENTROID * k)
    if limit < len(sample):
        sample = sample[np.random.default_rng(seed).choice(len(sample), limit, replace=False)]
    kmeans = faiss.Kmeans(
        sample.shape[1],
        k,
        niter=iterations,
        seed=seed % (2**31),
        spherical=True,
        max_points_per_centroid=POINTS_PER_CENTROID,
        min_points_per_centroid=1,
        verbose=False,
    )
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # the same centroids on any machine, whatever its core count
    try:
        kmeans.train(sample)
    finally:
        faiss.omp_set_num_threads(threads)
    return _unit(kmeans.centroids)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows / np.where(norms > 0, norms, 1), dtype=np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray, border: int) -> np.ndarray:
    """[n, b] ids of each row's b nearest centroids (b = min(border, k)), nearest first."""
    import faiss

    b = max(1, min(border, len(centroids)))
    if len(vectors) == 0:
        return np.zeros((0, b), np.int64)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _sims, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), b)
    return ids.astype(np.int64)


def bounded_sample(rng: np.random.Generator, rows: int, take: int) -> np.ndarray:
    """Sorted row indices: all rows, or `take` of them drawn without replacement."""
    if rows <= take:
        return np.arange(rows)
    return np.sort(rng.choice(rows, take, replace=False))
