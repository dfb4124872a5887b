"""A small synthetic WebDataset world: image-text shards and grounding shards of coloured boxes.

Each image is one coloured rectangle on a light background; its caption names the colour and its
grounding record gives the rectangle's normalised box, so the data is consistent and a model can
learn from it. Tests, smoke runs and the training-step benchmark use it when no real shards are
at hand. A few records are broken on purpose (a truncated JPEG, a missing caption) so the
bad-record path is always exercised.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 40),
}


def rectangle_image(
    rng: np.random.Generator, size: int, shape: tuple[int, int] | None = None
) -> tuple[bytes, str, list[float]]:
    """A JPEG with one coloured rectangle; returns (bytes, colour name, normalised box). With
    `shape` (height, width) the size × size picture is stretched to it (the box stays valid)."""
    name = list(COLOURS)[rng.integers(len(COLOURS))]
    x0, y0 = rng.integers(0, size // 2, size=2)
    w, h = rng.integers(size // 4, size // 2, size=2)
    pixels = np.full((size, size, 3), 235, dtype=np.uint8)
    pixels[y0 : y0 + h, x0 : x0 + w] = COLOURS[name]
    image = Image.fromarray(pixels)
    if shape is not None:
        image = image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    box = [x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size]
    return buffer.getvalue(), name, [float(v) for v in box]


def _add_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@dataclass
class SyntheticShards:
    root: Path
    text_pattern: str  # brace pattern over the image-text shards
    grounding_pattern: str
    text_keys: list[list[str]]  # keys per text shard, in file order (bad records included)
    grounding_keys: list[list[str]]
    bad_text_keys: set[str]


def write_synthetic_shards(
    root: Path,
    text_shards: int = 4,
    per_shard: int = 12,
    grounding_shards: int = 1,
    grounding_per_shard: int = 10,
    image_size: int = 48,
    seed: int = 0,
    with_bad_records: bool = True,
    image_shapes: list[tuple[int, int]] | None = None,
) -> SyntheticShards:
    """`image_shapes` (height, width): cycle the images through these sizes and aspect ratios,
    like shards that keep the source size (curation `shards --keep-source-size`)."""
    rng = np.random.default_rng(seed)
    shapes = itertools.cycle(image_shapes) if image_shapes else itertools.repeat(None)
    root.mkdir(parents=True, exist_ok=True)
    text_keys, grounding_keys, bad = [], [], set()
    for shard in range(text_shards):
        keys = []
        with tarfile.open(root / f"text-{shard:05d}.tar", "w") as archive:
            for index in range(per_shard):
                key = f"{shard:05d}{index:04d}"
                keys.append(key)
                image, colour, _ = rectangle_image(rng, image_size, next(shapes))
                truncate = with_bad_records and (shard, index) == (1, 3)
                drop_caption = with_bad_records and (shard, index) == (2, 5)
                if truncate or drop_caption:
                    bad.add(key)
                _add_file(archive, f"{key}.jpg", image[: len(image) // 3] if truncate else image)
                if not drop_caption:
                    _add_file(archive, f"{key}.txt", f"a {colour} rectangle".encode())
                _add_file(archive, f"{key}.json", json.dumps({"key": key}).encode())
        text_keys.append(keys)
    for shard in range(grounding_shards):
        keys = []
        with tarfile.open(root / f"ground-{shard:05d}.tar", "w") as archive:
            for index in range(grounding_per_shard):
                key = f"g{shard:04d}{index:04d}"
                keys.append(key)
                image, colour, box = rectangle_image(rng, image_size, next(shapes))
                refs = {
                    "source": "synthetic",
                    "refs": [{"phrase": f"{colour} rectangle", "box": box}],
                }
                _add_file(archive, f"{key}.jpg", image)
                _add_file(archive, f"{key}.json", json.dumps(refs).encode())
        grounding_keys.append(keys)
    return SyntheticShards(
        root,
        str(root / f"text-{{00000..{text_shards - 1:05d}}}.tar"),
        str(root / f"ground-{{00000..{grounding_shards - 1:05d}}}.tar"),
        text_keys,
        grounding_keys,
        bad,
    )
