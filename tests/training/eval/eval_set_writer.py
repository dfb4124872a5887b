"""Small evaluation sets in CLIP_benchmark's WebDataset layout, with known answers: flat
backgrounds with one coloured square whose colour decides the class."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64
# Class k (1-based in masks, 0-based in classification) is a square of COLOURS[k - 1].
COLOURS = ((230, 30, 30), (30, 30, 230))
SEGMENTATION_CLASSES = ("background", "red square", "blue square")


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def square_scene(label: int, corner: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """(RGB image, class-id mask) with a 32x32 square of class `label` (1-based) at `corner`."""
    pixels = np.full((SIZE, SIZE, 3), 40, dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    y, x = corner
    pixels[y : y + 32, x : x + 32] = COLOURS[label - 1]
    mask[y : y + 32, x : x + 32] = label
    return Image.fromarray(pixels), Image.fromarray(mask, mode="L")


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


CORNERS = ((0, 0), (0, 32), (32, 0), (32, 32), (16, 16), (8, 24))


def write_segmentation_set(folder: Path, train: int = 4, test: int = 2) -> None:
    """train/ and test/ splits; labels alternate 1, 2, 1, 2, ... so each split holds both."""
    (folder).mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("\n".join(SEGMENTATION_CLASSES) + "\n")
    for split, count in (("train", train), ("test", test)):
        samples = []
        for i in range(count):
            image, mask = square_scene(1 + i % 2, CORNERS[i % len(CORNERS)])
            samples.append(
                (f"{i:06d}", {"jpg": encode(image, "JPEG"), "seg.png": encode(mask, "PNG")})
            )
        if count:
            write_shard(folder / split / "0.tar", samples)


def write_classification_set(folder: Path, count: int = 6) -> list[int]:
    """A test split only (k-NN then runs leave-one-out); returns the labels."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("red square\nblue square\n")
    labels = [i % 2 for i in range(count)]
    samples = [
        (
            f"{i:06d}",
            {
                "jpg": encode(square_scene(label + 1, CORNERS[i % len(CORNERS)])[0], "JPEG"),
                "cls": str(label).encode(),
            },
        )
        for i, label in enumerate(labels)
    ]
    write_shard(folder / "test" / "0.tar", samples)
    return labels
