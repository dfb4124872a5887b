"""Visual Genome region descriptions: free-text phrases with x, y, width, height pixel boxes.

`region_descriptions.json` is a list of `{"id": IMAGE_ID, "regions": [{"region_id", "image_id",
"phrase", "x", "y", "width", "height"}]}`. The optional `image_data.json` (list of `{"image_id"
or "id", "width", "height", "coco_id", "url"}`) gives the size the boxes were drawn on, the COCO
id (about half of VG is COCO, so RefCOCO's evaluation images must be excluded) and the image's
folder (VG_100K or VG_100K_2, from its URL). Some regions stick out of their image: clipped later.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from typing import Any

from curation import fsio
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats import GroundingFormat, GroundingImage, clean_phrase

XYWH_PIXEL = BoxConvention("xywh", "pixel")


def _load_list(url: str) -> list[Any]:
    try:
        return fsio.read_json(url, expect=list)
    except ValueError as exc:  # not JSON, or not a list
        raise ValueError(
            f"{url}: expected a JSON list (region_descriptions.json or image_data.json): {exc}"
        ) from None


def _is_image_data(document: list[Any]) -> bool:
    first = next((item for item in document if isinstance(item, dict)), {})
    return "regions" not in first and ("width" in first or "coco_id" in first)


def _image_path(image_id: int, meta: dict[str, Any]) -> str:
    url = meta.get("url")
    if isinstance(url, str) and "/" in url:
        folder, name = posixpath.split(url)
        return posixpath.join(posixpath.basename(folder), name)
    return f"{image_id}.jpg"


def read_visualgenome(urls: list[str], counts: Counter) -> Iterator[GroundingImage]:
    documents = [(url, _load_list(url)) for url in urls]
    image_data: dict[int, dict[str, Any]] = {}
    for _url, document in documents:
        if _is_image_data(document):
            for item in document:
                if isinstance(item, dict):
                    image_data[item.get("image_id", item.get("id"))] = item
    regions_files = [(url, doc) for url, doc in documents if not _is_image_data(doc)]
    if not regions_files:
        raise ValueError(f"visualgenome: no region_descriptions.json among {urls}")
    for url, document in regions_files:
        for entry in document:
            if not isinstance(entry, dict) or not isinstance(entry.get("regions"), list):
                counts["malformed_image_record"] += 1
                continue
            image_id = entry.get("id", entry.get("image_id"))
            meta = image_data.get(image_id, {})
            record = GroundingImage(
                "visualgenome",
                str(image_id),
                _image_path(image_id, meta),
                width=meta.get("width"),
                height=meta.get("height"),
                coco_id=meta.get("coco_id"),
            )
            for region in entry["regions"]:
                phrase = clean_phrase(region.get("phrase")) if isinstance(region, dict) else ""
                if not phrase:
                    counts["empty_phrase"] += 1
                    continue
                record.phrases.append(phrase)
                record.boxes.append([region.get(k) for k in ("x", "y", "width", "height")])
            yield record


FORMAT = GroundingFormat(
    "visualgenome",
    XYWH_PIXEL,
    read_visualgenome,
    "region_descriptions.json (+ image_data.json for sizes, COCO ids, VG_100K folders)",
)
