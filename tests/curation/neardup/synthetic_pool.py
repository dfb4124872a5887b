"""A synthetic scored pool in the score stage's real output format, with planted duplicate groups.

POOL/{shard}.tar + .parquet (tiny 8x8 JPEGs; each distinct picture made unique by a JPEG comment,
so sha256 differs unless a copy is exact), and POOL/curation/score/: {shard}.parquet (uid,
clip_score_TAG, keep_score), {shard}.emb.npy (fp16 embeddings), {shard}.pix.npy (fp16 pixel
signatures), scorer.json. No model runs: the vectors are drawn. Unique rows scatter around
`concepts` centres (random pairs sit far below a 0.95 cosine); a planted group (Zipf-sized, its
members spread over all shards) is one base picture and its copies of four kinds:
- exact: the same JPEG bytes and vectors;
- re-encode / resize: embedding and pixel signature slightly moved, same aspect ratio;
- crop: embedding slightly moved, pixel signature far off, aspect ratio changed (only the
  embedding can find it, as with real crops).
Generated shard by shard; memory is one shard plus an int32 per row. Used by the neardup tests and
benchmarks/neardup_scale.py.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EMBED_DIM = 64  # the tiny scorer's (curation/score/configs/tiny-clip.json)
SIGNATURE_DIM = 432
TAG = "tiny"
KINDS = ("exact", "reencode", "resize", "crop")


@dataclass(frozen=True)
class SyntheticPool:
    pool: Path
    scores: Path
    shards: list[str]
    rows: int
    groups: int
    planted_rows: int


def _tiny_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 80, 200)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


TEMPLATE = _tiny_jpeg()


def unique_jpeg(tag: str) -> bytes:
    """A valid JPEG whose bytes are unique to `tag` (a COM segment right after SOI)."""
    comment = tag.encode()
    return (
        TEMPLATE[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + TEMPLATE[2:]
    )


def _header_template() -> tuple[bytes, int]:
    header = bytearray(512)
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    return bytes(header), sum(header)


HEADER, HEADER_SUM = _header_template()


def _tar_member(name: str, data: bytes) -> bytes:
    """A plain ustar header + data, padded to 512 bytes (tarfile's pax path is ~100x slower)."""
    encoded, size = name.encode(), b"%011o\0" % len(data)
    checksum = b"%06o\0 " % (HEADER_SUM + sum(encoded) + sum(size))
    header = encoded + HEADER[len(encoded) : 124] + size + HEADER[136:148] + checksum + HEADER[156:]
    return header + data + b"\0" * (-len(data) % 512)


def zipf_groups(rng: np.random.Generator, rows: int, planted_fraction: float, max_size: int):
    """Group sizes (>= 2, Zipf a=2, capped) until planted_fraction of the rows are in groups."""
    sizes, total = [], 0
    budget = int(rows * planted_fraction)
    while total < budget:
        size = int(min(max_size, rng.zipf(2.0) + 1))
        size = min(size, budget - total) if budget - total >= 2 else 0
        if size < 2:
            break
        sizes.append(size)
        total += size
    return np.array(sizes, np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_synthetic_pool(
    root: Path,
    rows: int,
    shard_rows: int = 10_000,
    seed: int = 0,
    planted_fraction: float = 0.1,
    max_group: int = 2000,
    concepts: int = 512,
    progress: bool = False,
) -> SyntheticPool:
    rng = np.random.default_rng(seed)
    pool, scores = root / "pool", root / "pool" / "curation" / "score"
    scores.mkdir(parents=True, exist_ok=True)
    sizes = zipf_groups(rng, rows, planted_fraction, max_group)
    # group_of[row] = planted group id or -1; member[row] = its index inside the group.
    group_of = np.full(rows, -1, np.int32)
    member = np.zeros(rows, np.int32)
    slots = rng.permutation(rows)[: int(sizes.sum())]
    group_of[slots] = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    member[slots] = np.concatenate([np.arange(s) for s in sizes]) if len(sizes) else []
    centres = _unit(rng.normal(size=(concepts, EMBED_DIM)))
    pixel_centres = _unit(rng.normal(size=(concepts, SIGNATURE_DIM)))
    shard_count = -(-rows // shard_rows)
    shard_ids = [f"{s:05d}" for s in range(shard_count)]
    for s, shard in enumerate(shard_ids):
        lo, hi = s * shard_rows, min(rows, (s + 1) * shard_rows)
        _write_shard(
            pool, scores, shard, np.arange(lo, hi), group_of, member, centres, pixel_centres, seed
        )
        if progress:
            print(f"synthetic pool: shard {s + 1}/{shard_count}", flush=True)
    (scores / "scorer.json").write_text(
        json.dumps(
            {
                "model_name": "tiny-clip",
                "weights": "synthetic",
                "model_config": None,
                "tag": TAG,
                "random_init": False,
            }
        )
    )
    return SyntheticPool(pool, scores, shard_ids, rows, len(sizes), int(sizes.sum()))


def _group_base(seed: int, group: int, centres: np.ndarray, pixel_centres: np.ndarray):
    g = np.random.default_rng([seed, 1, group])
    concept = int(g.integers(len(centres)))
    embedding = centres[concept] + 1.5 * g.normal(size=EMBED_DIM) / np.sqrt(EMBED_DIM)
    pixels = pixel_centres[concept] + 1.5 * g.normal(size=SIGNATURE_DIM) / np.sqrt(SIGNATURE_DIM)
    return embedding, pixels


def _write_shard(pool, scores, shard, rows, group_of, member, centres, pixel_centres, seed) -> None:
    rng = np.random.default_rng([seed, 2, int(shard)])
    n = len(rows)
    concept = rng.integers(len(centres), size=n)
    embeddings = centres[concept] + 1.5 * rng.normal(size=(n, EMBED_DIM)) / np.sqrt(EMBED_DIM)
    pixels = pixel_centres[concept] + 1.5 * rng.normal(size=(n, SIGNATURE_DIM)) / np.sqrt(
        SIGNATURE_DIM
    )
    width = np.full(n, 8, np.int32)
    height = np.full(n, 8, np.int32)
    jpgs = [unique_jpeg(f"row {r}") for r in rows]
    kinds: list[str | None] = [None] * n
    for i, row in enumerate(rows):
        group = int(group_of[row])
        if group < 0:
            continue
        base_embedding, base_pixels = _group_base(seed, group, centres, pixel_centres)
        index = int(member[row])
        kind = (
            KINDS[0]
            if index == 0
            else KINDS[int(np.random.default_rng([seed, 3, group, index]).integers(4))]
        )
        kinds[i] = kind
        jitter = np.random.default_rng([seed, 4, group, index])
        if kind == "exact":  # the group's original: every exact copy has its bytes and vectors
            embeddings[i], pixels[i], jpgs[i] = (
                base_embedding,
                base_pixels,
                unique_jpeg(f"group {group}"),
            )
        elif kind in ("reencode", "resize"):
            embeddings[i] = base_embedding + 0.05 * jitter.normal(size=EMBED_DIM) / np.sqrt(
                EMBED_DIM
            )
            pixels[i] = base_pixels + 0.05 * jitter.normal(size=SIGNATURE_DIM) / np.sqrt(
                SIGNATURE_DIM
            )
        else:  # crop: a new aspect ratio and pixel signature, the same content
            embeddings[i] = base_embedding + 0.1 * jitter.normal(size=EMBED_DIM) / np.sqrt(
                EMBED_DIM
            )
            width[i] = 7
    uids = [hashlib.blake2b(f"synthetic {r}".encode(), digest_size=16).hexdigest() for r in rows]
    keys = [f"{shard}{i:05d}" for i in range(n)]
    texts = [f"synthetic picture {r}" for r in rows]
    with open(pool / f"{shard}.tar", "wb") as archive:
        for key, uid, text, jpg in zip(keys, uids, texts, jpgs):
            for name, data in (
                (f"{key}.jpg", jpg),
                (f"{key}.txt", text.encode()),
                (f"{key}.json", json.dumps({"uid": uid, "key": key}).encode()),
            ):
                archive.write(_tar_member(name, data))
        archive.write(b"\0" * 1024)  # end-of-archive
    pq.write_table(
        pa.table(
            {
                "uid": uids,
                "key": keys,
                "url": [f"http://127.0.0.1:9/img/{r}.jpg" for r in rows],
                "text": texts,
                "status": ["success"] * n,
                "error_message": pa.array([None] * n, pa.string()),
                "width": pa.array(width, pa.int32()),
                "height": pa.array(height, pa.int32()),
                "original_width": pa.array(width, pa.int32()),
                "original_height": pa.array(height, pa.int32()),
                "sha256": [hashlib.sha256(j).hexdigest() for j in jpgs],
                "host": ["127.0.0.1"] * n,
                "planted_group": pa.array(
                    np.where(group_of[rows] >= 0, group_of[rows], None), pa.int64()
                ),
                "planted_kind": pa.array(kinds, pa.string()),
            }
        ),
        pool / f"{shard}.parquet",
    )
    score = rng.random(n).astype(np.float32)
    pq.write_table(
        pa.table(
            {
                "uid": uids,
                f"clip_score_{TAG}": pa.array(score, pa.float32()),
                "keep_score": pa.array(np.ones(n, bool)),
            }
        ),
        scores / f"{shard}.parquet",
    )
    np.save(scores / f"{shard}.emb.npy", _unit(embeddings).astype(np.float16))
    np.save(scores / f"{shard}.pix.npy", _unit(pixels).astype(np.float16))
