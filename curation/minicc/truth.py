"""The answer key: truth.parquet (one row per <img> occurrence) and truth_images.parquet (per URL)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.minicc.captions import good_caption
from curation.minicc.catalog import Catalog, WebImage
from curation.minicc.pages import CORRECT_CAPTION_KINDS, Page
from curation.minicc.www import RenderedInfo

_STRING, _BOOL, _INT = pa.string(), pa.bool_(), pa.int64()
OCCURRENCE_SCHEMA = pa.schema(
    [
        ("page_url", _STRING),
        ("warc_path", _STRING),
        ("page_index", _INT),
        ("tag_index", _INT),
        ("image_url", _STRING),
        ("url_form", _STRING),
        ("raw_src", _STRING),
        ("alt", _STRING),
        ("title", _STRING),
        ("text", _STRING),
        ("caption_kind", _STRING),
        ("caption_correct", _BOOL),
        ("lang", _STRING),
        ("page_lang", _STRING),
        ("charset", _STRING),
        ("charset_declared", _STRING),
        ("image_id", _STRING),
        ("scene_id", _STRING),
        ("dup_group", _STRING),
        ("fault", _STRING),
        ("page_fault", _STRING),
        ("is_eval_contaminant", _BOOL),
        ("eval_key", _STRING),
        ("unsafe", _BOOL),
    ]
)
IMAGE_SCHEMA = pa.schema(
    [
        ("url", _STRING),
        ("image_id", _STRING),
        ("host", _STRING),
        ("path", _STRING),
        ("variant", _STRING),
        ("scene_id", _STRING),
        ("dup_group", _STRING),
        ("kinds", pa.list_(_STRING)),
        ("colours", pa.list_(_STRING)),
        ("sizes", pa.list_(_STRING)),
        ("positions", pa.list_(_STRING)),
        ("phrases", pa.list_(_STRING)),
        ("background", _STRING),
        ("boxes", pa.list_(pa.list_(pa.float64()))),
        ("good_caption", _STRING),
        ("width", _INT),
        ("height", _INT),
        ("fault", _STRING),
        ("final_url", _STRING),
        ("is_eval_contaminant", _BOOL),
        ("eval_key", _STRING),
        ("unsafe", _BOOL),
        ("contrast_of", _STRING),
        ("page_references", _INT),
    ]
)


def _write(table: pa.Table, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    pq.write_table(table, temporary, compression="zstd")
    temporary.replace(path)


def _boxes(image: WebImage, rendered: RenderedInfo, by_url: dict[str, WebImage]):
    source = by_url.get(image.final_url, image) if image.final_url else image
    if source.image_id is None or source.image_id not in rendered:
        return None
    return [[round(float(v), 5) for v in box] for box in rendered[source.image_id][2]]


def occurrence_rows(pages: list[Page]) -> list[dict]:
    rows = []
    for page in pages:
        for tag_index, tag in enumerate(page.tags):
            target = tag.target
            rows.append(
                {
                    "page_url": page.url,
                    "warc_path": page.warc_path,
                    "page_index": page.index,
                    "tag_index": tag_index,
                    "image_url": tag.image_url,
                    "url_form": tag.url_form,
                    "raw_src": dict(tag.attrs).get("src"),
                    "alt": tag.alt,
                    "title": tag.title,
                    "text": tag.text,
                    "caption_kind": tag.caption_kind,
                    "caption_correct": tag.caption_kind in CORRECT_CAPTION_KINDS,
                    "lang": tag.lang,
                    "page_lang": page.lang,
                    "charset": page.charset,
                    "charset_declared": page.charset_declared,
                    "image_id": target.image_id if target else None,
                    "scene_id": target.scene.scene_id if target else None,
                    "dup_group": target.scene.scene_id if target and target.live else None,
                    "fault": target.fault if target else None,
                    "page_fault": page.page_fault,
                    "is_eval_contaminant": bool(target and target.eval_key),
                    "eval_key": target.eval_key if target else None,
                    "unsafe": bool(target and target.scene.unsafe),
                }
            )
    return rows


def image_rows(catalog: Catalog, rendered: RenderedInfo, references: Counter) -> list[dict]:
    by_url = {im.url: im for im in catalog.images}
    rows = []
    for image in catalog.images:
        shapes = image.scene.shapes
        rows.append(
            {
                "url": image.url,
                "image_id": image.image_id,
                "host": image.host,
                "path": image.path,
                "variant": image.variant,
                "scene_id": image.scene.scene_id,
                "dup_group": image.scene.scene_id if image.live else None,
                "kinds": [s.kind for s in shapes],
                "colours": [s.colour for s in shapes],
                "sizes": [s.size for s in shapes],
                "positions": [s.position for s in shapes],
                "phrases": [s.referring_expression for s in shapes],
                "background": image.scene.background,
                "boxes": _boxes(image, rendered, by_url),
                "good_caption": good_caption(image.scene) if image.scene.shapes else None,
                "width": image.width,
                "height": image.height,
                "fault": image.fault,
                "final_url": image.final_url,
                "is_eval_contaminant": image.eval_key is not None,
                "eval_key": image.eval_key,
                "unsafe": image.scene.unsafe,
                "contrast_of": image.scene.contrast_of,
                "page_references": references.get(image.url, 0),
            }
        )
    return rows


def write_truth(
    root: Path, pages: list[Page], catalog: Catalog, rendered: RenderedInfo
) -> tuple[list[dict], list[dict]]:
    occurrences = occurrence_rows(pages)
    references = Counter(row["image_url"] for row in occurrences if row["image_url"])
    images = image_rows(catalog, rendered, references)
    _write(pa.Table.from_pylist(occurrences, schema=OCCURRENCE_SCHEMA), root / "truth.parquet")
    _write(pa.Table.from_pylist(images, schema=IMAGE_SCHEMA), root / "truth_images.parquet")
    return occurrences, images
