"""RefCOCO, RefCOCO+ and RefCOCOg: referring expressions on COCO train2014 images.

Each dataset folder (as distributed with the `refer` toolkit) holds `refs(unc).p` (or
`refs(umd).p`, `refs(google).p`; a JSON dump of the same list also works) and `instances.json`.
A ref is `{ref_id, ann_id, image_id, split, sentences: [{sent, raw, tokens}], ...}`; its box is
the COCO annotation `ann_id` in instances.json (xywh pixels, 0-based). Only the `train` split
becomes training data. The three datasets share COCO train2014 images and split them differently
(an image in RefCOCOg's val may be in RefCOCO's train), so every image named by any non-train
split of any given file is an evaluation image, excluded from all training grounding shards;
`evaluation_coco_ids` lists them for the other sources (Visual Genome overlaps COCO too).
"""

from __future__ import annotations

import io
import json
import pickle
import posixpath
from collections import Counter
from collections.abc import Iterator
from typing import Any

from curation import fsio
from curation.ingest.boxes import BoxConvention
from curation.ingest.formats import GroundingFormat, GroundingImage, clean_phrase
from curation.ingest.formats.coco_style import coco_images, load_coco_json

XYWH_PIXEL = BoxConvention("xywh", "pixel")
DATASETS = ("refcoco", "refcoco+", "refcocog")
TRAIN_SPLIT = "train"


class _PlainDataUnpickler(pickle.Unpickler):
    """refs(*).p holds only lists, dicts, strings and numbers: refuse anything that names code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refs pickle refers to {module}.{name}; only plain data is accepted"
        )


def load_refs(url: str) -> list[dict[str, Any]]:
    data = fsio.read_bytes(url)
    try:
        if url.endswith(".json"):
            refs = json.loads(data)
        else:
            refs = _PlainDataUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except (pickle.UnpicklingError, json.JSONDecodeError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{url}: not a refs file: {exc}") from None
    if not isinstance(refs, list):
        raise ValueError(f"{url}: a refs file holds a list of refs, found {type(refs).__name__}")  # noqa: TRY004 - bad input file
    return refs


def dataset_of(url: str) -> str:
    """refcoco, refcoco+ or refcocog from the refs file's folder (the toolkit's layout)."""
    folder = posixpath.basename(posixpath.dirname(url)).lower()
    return folder if folder in DATASETS else "refcoco"


def _is_instances(url: str) -> bool:
    return posixpath.basename(url).startswith("instances")


def evaluation_coco_ids(urls: list[str]) -> set[int]:
    """COCO ids of every image in a non-train split of any refs file among `urls`."""
    ids: set[int] = set()
    for url in urls:
        if not _is_instances(url):
            ids.update(
                int(ref["image_id"])
                for ref in load_refs(url)
                if isinstance(ref, dict) and ref.get("split") != TRAIN_SPLIT and "image_id" in ref
            )
    return ids


def read_refcoco(urls: list[str], counts: Counter) -> Iterator[GroundingImage]:
    instances = {posixpath.dirname(u): u for u in urls if _is_instances(u)}
    refs_files = [u for u in urls if not _is_instances(u)]
    if not refs_files or not instances:
        raise ValueError(
            "refcoco: give each dataset's refs(*).p and instances.json with --annotations"
        )
    for url in refs_files:
        instances_url = instances.get(posixpath.dirname(url)) or next(iter(instances.values()))
        document = load_coco_json(instances_url)
        images = coco_images(document, counts)
        boxes = {
            ann["id"]: ann.get("bbox")
            for ann in document["annotations"]
            if isinstance(ann, dict) and "id" in ann
        }
        source = dataset_of(url)
        grouped: dict[int, GroundingImage] = {}
        for ref in load_refs(url):
            if not isinstance(ref, dict) or ref.get("image_id") not in images:
                counts["ref_without_image"] += 1
                continue
            if ref.get("split") != TRAIN_SPLIT:
                counts["evaluation_split_ref"] += 1
                continue
            if ref.get("ann_id") not in boxes:
                counts["ref_without_box"] += 1
                continue
            image = images[ref["image_id"]]
            record = grouped.get(ref["image_id"])
            if record is None:
                record = grouped[ref["image_id"]] = GroundingImage(
                    source,
                    str(ref["image_id"]),
                    image["file_name"],
                    width=image.get("width"),
                    height=image.get("height"),
                    coco_id=int(ref["image_id"]),
                )
            for sentence in ref.get("sentences") or []:
                phrase = (
                    clean_phrase(sentence.get("sent") or sentence.get("raw"))
                    if isinstance(sentence, dict)
                    else ""
                )
                if not phrase:
                    counts["empty_phrase"] += 1
                    continue
                record.phrases.append(phrase)
                record.boxes.append(boxes[ref["ann_id"]])
        yield from grouped.values()


FORMAT = GroundingFormat(
    "refcoco",
    XYWH_PIXEL,
    read_refcoco,
    "refs(*).p or .json + instances.json per dataset folder (refcoco, refcoco+, refcocog); train split only",
)
