"""Readers of the grounding datasets' native annotation files.

Each reader yields `GroundingImage`s: one image, its phrases and its boxes *as the dataset writes
them* (the dataset's `BoxConvention` says how to read them). Bad records are counted in the
`Counter` the reader is given and skipped; a file that is not the expected format raises a
ValueError naming it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from curation.ingest.boxes import BoxConvention


@dataclass
class GroundingImage:
    source: str
    image_id: str  # unique within the source
    image_path: str  # relative to the --images root
    phrases: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)  # the dataset's own convention
    width: int | None = None  # the size the annotation's pixel boxes refer to, when given
    height: int | None = None
    coco_id: int | None = None  # for decontamination against RefCOCO's evaluation images


@dataclass(frozen=True)
class GroundingFormat:
    name: str
    convention: BoxConvention
    read: Callable[[list[str], Counter], Iterator[GroundingImage]]
    help: str


def clean_phrase(text: object) -> str:
    """Whitespace collapsed; unicode kept as written (NFC so equal phrases compare equal)."""
    import unicodedata

    if not isinstance(text, str):
        return ""
    return unicodedata.normalize("NFC", " ".join(text.split()))


def grounding_formats() -> dict[str, GroundingFormat]:
    from curation.ingest.formats import coco_style, grand, openimages, refcoco, visualgenome

    formats = [
        openimages.FORMAT,
        coco_style.OBJECTS365,
        visualgenome.FORMAT,
        refcoco.FORMAT,
        grand.FORMAT,
    ]
    return {fmt.name: fmt for fmt in formats}
