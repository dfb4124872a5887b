"""OpenImages box annotations: `*-annotations-bbox.csv` plus the class descriptions CSV.

Box rows are `ImageID, Source, LabelName, Confidence, XMin, XMax, YMin, YMax, IsOccluded,
IsTruncated, IsGroupOf, IsDepiction, IsInside, ...`: coordinates are fractions of the image, in
the order x-min, x-max, y-min, y-max. The class descriptions map a MID (`/m/011k07`) to its display
name; the v5/v6 file has no header, the v7 one has `LabelName,DisplayName`. Group-of boxes cover
several objects at once, so they are not referring targets. Images are `{ImageID}.jpg`.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections import Counter
from collections.abc import Iterator

from curation import fsio
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats import GroundingFormat, GroundingImage, clean_phrase

XXYY_NORMALISED = BoxConvention("xxyy", "normalised")
BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")


@contextlib.contextmanager
def _csv_rows(url: str) -> Iterator[Iterator[list[str]]]:
    """The CSV rows of a (possibly huge) file, streamed."""
    fs, path = fsio.filesystem(url)
    with (
        fs.open(path, "rb") as raw,
        io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text,
    ):
        yield csv.reader(text)


def _header(url: str) -> list[str]:
    with _csv_rows(url) as rows:
        return next(rows, [])


def split_files(urls: list[str]) -> tuple[list[str], dict[str, str]]:
    """The box files and the merged MID → display name table."""
    boxes, names = [], {}
    for url in urls:
        header = _header(url)
        if "ImageID" in header:
            missing = [c for c in BOX_COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{url}: OpenImages box CSV without column(s) {', '.join(missing)}"
                )
            boxes.append(url)
        elif len(header) == 2:
            with _csv_rows(url) as rows:
                if header == ["LabelName", "DisplayName"]:
                    next(rows)
                names.update({r[0]: clean_phrase(r[1]) for r in rows if len(r) == 2})
        else:
            raise ValueError(
                f"{url}: neither an OpenImages box CSV (ImageID, ...) nor a class "
                "descriptions CSV (MID, name)"
            )
    if not names:
        raise ValueError(
            "openimages: give the class descriptions CSV (class-descriptions-boxable.csv) "
            "with --annotations"
        )
    return boxes, names


def read_openimages(urls: list[str], counts: Counter) -> Iterator[GroundingImage]:
    box_files, names = split_files(urls)
    grouped: dict[str, GroundingImage] = {}
    for url in box_files:
        with _csv_rows(url) as rows:
            add_box_rows(rows, names, grouped, counts)
    yield from grouped.values()


def add_box_rows(
    rows: Iterator[list[str]],
    names: dict[str, str],
    grouped: dict[str, GroundingImage],
    counts: Counter,
) -> None:
    """Add one box file's rows to `grouped` (an image's boxes may span files)."""
    header = next(rows)
    at = {name: index for index, name in enumerate(header)}
    for row in rows:
        if len(row) != len(header):
            counts["malformed_row"] += 1
            continue
        if "IsGroupOf" in at and row[at["IsGroupOf"]] == "1":
            counts["group_box"] += 1
            continue
        phrase = names.get(row[at["LabelName"]], "")
        if not phrase:
            counts["unknown_label"] += 1
            continue
        image_id = row[at["ImageID"]]
        record = grouped.get(image_id)
        if record is None:
            record = grouped[image_id] = GroundingImage("openimages", image_id, f"{image_id}.jpg")
        record.phrases.append(phrase)
        record.boxes.append([row[at[c]] for c in ("XMin", "XMax", "YMin", "YMax")])


FORMAT = GroundingFormat(
    "openimages",
    XXYY_NORMALISED,
    read_openimages,
    "box CSVs (XMin, XMax, YMin, YMax as fractions) + class-descriptions CSV; images {ImageID}.jpg",
)
