"""A tiny WebDataset world for trainer tests: image-text shards and grounding shards.

Images are coloured rectangles on a plain background; captions and boxes describe them, so the
samples are consistent (a model can learn from them) and cheap to make with Pillow.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}


def shape_image(rng: np.random.Generator, size: int = 48) -> tuple[bytes, str, list[float]]:
    """A JPEG with one coloured rectangle; returns (bytes, colour name, normalised box)."""
    name = list(COLOURS)[rng.integers(len(COLOURS))]
    x0, y0 = rng.integers(0, size // 2, size=2)
    w, h = rng.integers(size // 4, size // 2, size=2)
    pixels = np.full((size, size, 3), 235, dtype=np.uint8)
    pixels[y0 : y0 + h, x0 : x0 + w] = COLOURS[name]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    box = [x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size]
    return buffer.getvalue(), name, [float(v) for v in box]


def add_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@dataclass
class ShardWorld:
    root: Path
    text_pattern: str  # brace pattern over the image-text shards
    grounding_pattern: str
    text_keys: list[list[str]]  # keys per text shard, in file order (bad records included)
    grounding_keys: list[list[str]]
    bad_text_keys: set[str]


def write_shards(root: Path, text_shards: int = 4, per_shard: int = 12, grounding_shards: int = 1,
                 grounding_per_shard: int = 10, seed: int = 0) -> ShardWorld:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    text_keys, grounding_keys, bad = [], [], set()
    for shard in range(text_shards):
        keys = []
        with tarfile.open(root / f"text-{shard:05d}.tar", "w") as archive:
            for index in range(per_shard):
                key = f"{shard:05d}{index:04d}"
                keys.append(key)
                image, colour, _ = shape_image(rng)
                if shard == 1 and index == 3:  # a corrupt JPEG
                    image, bad = image[: len(image) // 3], bad | {key}
                add_file(archive, f"{key}.jpg", image)
                if not (shard == 2 and index == 5):  # a sample without its caption
                    add_file(archive, f"{key}.txt", f"a {colour} rectangle".encode())
                else:
                    bad.add(key)
                add_file(archive, f"{key}.json", json.dumps({"key": key}).encode())
        text_keys.append(keys)
    for shard in range(grounding_shards):
        keys = []
        with tarfile.open(root / f"ground-{shard:05d}.tar", "w") as archive:
            for index in range(grounding_per_shard):
                key = f"g{shard:04d}{index:04d}"
                keys.append(key)
                image, colour, box = shape_image(rng)
                refs = {"source": "test", "refs": [{"phrase": f"{colour} rectangle", "box": box}]}
                add_file(archive, f"{key}.jpg", image)
                add_file(archive, f"{key}.json", json.dumps(refs).encode())
        grounding_keys.append(keys)
    return ShardWorld(
        root,
        str(root / f"text-{{00000..{text_shards - 1:05d}}}.tar"),
        str(root / f"ground-{{00000..{grounding_shards - 1:05d}}}.tar"),
        text_keys,
        grounding_keys,
        bad,
    )


@pytest.fixture(scope="session")
def shard_world(tmp_path_factory: pytest.TempPathFactory) -> ShardWorld:
    return write_shards(tmp_path_factory.mktemp("shards"))
