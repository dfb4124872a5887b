"""GranD (GLaMM's automatically annotated SA-1B): one JSON object per image name.

Each file holds `{IMAGE_NAME: {"objects": [{"id", "bbox": [x0, y0, x1, y1], "labels": [...],
"attributes": "..." | [...], "segmentation": ...}], ...}}` (other keys: captions, relations,
ignored here). Boxes are two-corner pixel boxes as the detectors emit them. The phrase is the
object's attribute sentence when it has one (a referring expression), else its first label with
underscores as spaces. The pipeline's attribute sentences sometimes keep a chat-role prefix
("Assistant: ..."), which is removed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from curation import fsio
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats import GroundingFormat, GroundingImage, clean_phrase

XYXY_PIXEL = BoxConvention("xyxy", "pixel")
ROLE_PREFIX = re.compile(r"^\s*(?:assistant|istant)\s*:?\s*", re.IGNORECASE)


def object_phrase(obj: dict[str, Any]) -> str:
    attributes = obj.get("attributes")
    if isinstance(attributes, list):
        attributes = next((a for a in attributes if isinstance(a, str) and a.strip()), None)
    if isinstance(attributes, str) and attributes.strip():
        return clean_phrase(ROLE_PREFIX.sub("", attributes))
    labels = obj.get("labels")
    if isinstance(labels, list) and labels:
        first = labels[0]
        label = first.get("label") if isinstance(first, dict) else first
        if isinstance(label, str):
            return clean_phrase(label.replace("_", " "))
    return ""


def read_grand(urls: list[str], counts: Counter) -> Iterator[GroundingImage]:
    for url in urls:
        try:
            document = fsio.read_json(url, expect=dict)
        except ValueError as exc:  # not JSON, or not an object
            raise ValueError(
                f"{url}: expected {{IMAGE_NAME: {{'objects': [...]}}}}: {exc}"
            ) from None
        for image_name, content in document.items():
            objects = content.get("objects") if isinstance(content, dict) else None
            if not isinstance(objects, list):
                counts["malformed_image_record"] += 1
                continue
            record = GroundingImage("grand", image_name.rsplit(".", 1)[0], image_name)
            for obj in objects:
                phrase = object_phrase(obj) if isinstance(obj, dict) else ""
                if not phrase:
                    counts["empty_phrase"] += 1
                    continue
                record.phrases.append(phrase)
                record.boxes.append(obj.get("bbox"))
            yield record


FORMAT = GroundingFormat(
    "grand",
    XYXY_PIXEL,
    read_grand,
    "per-image JSON {IMAGE_NAME: {'objects': [{'bbox' xyxy pixels, 'labels', 'attributes'}]}}",
)
