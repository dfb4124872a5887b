"""COCO-style detection JSON (Objects365): images, categories, annotations with xywh pixel boxes.

COCO coordinates are continuous and 0-based: a box [x, y, w, h] spans x..x+w. Crowd boxes (a
region of many objects, `iscrowd: 1`) name no single object, so they are not referring targets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from curation import fsio
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats import GroundingFormat, GroundingImage, clean_phrase

XYWH_PIXEL = BoxConvention("xywh", "pixel")


def load_coco_json(url: str) -> dict[str, Any]:
    try:
        document = fsio.read_json(url, expect=dict)
    except ValueError as exc:  # not JSON (decode errors are ValueErrors), or not an object
        raise ValueError(f"{url}: not a COCO-style JSON object: {exc}") from None
    if not all(k in document for k in ("images", "annotations")):
        raise ValueError(f"{url}: not a COCO-style file (needs 'images' and 'annotations')")
    return document


def coco_images(document: dict[str, Any], counts: Counter) -> dict[Any, dict[str, Any]]:
    images = {}
    for image in document["images"]:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            counts["malformed_image_record"] += 1
            continue
        images[image["id"]] = image
    return images


def read_objects365(urls: list[str], counts: Counter) -> Iterator[GroundingImage]:
    for url in urls:
        document = load_coco_json(url)
        names = {
            c["id"]: clean_phrase(c.get("name"))
            for c in document.get("categories", [])
            if isinstance(c, dict) and "id" in c
        }
        images = coco_images(document, counts)
        grouped: dict[Any, GroundingImage] = {}
        for ann in document["annotations"]:
            if not isinstance(ann, dict) or ann.get("image_id") not in images:
                counts["annotation_without_image"] += 1
                continue
            if ann.get("iscrowd"):
                counts["crowd_box"] += 1
                continue
            phrase = names.get(ann.get("category_id"), "")
            if not phrase:
                counts["unknown_category"] += 1
                continue
            image = images[ann["image_id"]]
            record = grouped.get(ann["image_id"])
            if record is None:
                record = grouped[ann["image_id"]] = GroundingImage(
                    "objects365",
                    str(ann["image_id"]),
                    image["file_name"],
                    width=image.get("width"),
                    height=image.get("height"),
                )
            record.phrases.append(phrase)
            record.boxes.append(ann.get("bbox"))
        yield from grouped.values()


OBJECTS365 = GroundingFormat(
    "objects365",
    XYWH_PIXEL,
    read_objects365,
    "COCO-style JSON (zhiyuan_objv2_train.json): xywh pixel boxes, category names as phrases",
)
