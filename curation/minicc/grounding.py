"""Grounding shards from the web's original JPEG pictures: KEY.jpg + KEY.json {"source", "refs"}.

PNG originals are left out rather than re-encoded: their bytes would differ from any served file.
"""

from __future__ import annotations

import json
from pathlib import Path

from curation.minicc.catalog import Catalog
from curation.minicc.www import RenderedInfo
from training.data.tars import write_tar


def write_grounding_shards(
    root: Path, catalog: Catalog, rendered: RenderedInfo, shard_size: int
) -> int:
    """Write root/grounding/{00000..}.tar; returns the number of samples."""
    originals = [
        im for im in catalog.images if im.variant == "original" and im.path.endswith(".jpg")
    ]
    samples = []
    for image in originals:
        _, _, boxes = rendered[image.image_id]
        refs = image.scene.grounding_refs(boxes)
        data = (root / "www" / f"{image.host}{image.path}").read_bytes()
        samples.append(
            (
                image.image_id,
                {
                    "jpg": data,
                    "json": json.dumps({"source": "minicc", "refs": refs}, sort_keys=True).encode(),
                },
            )
        )
    for shard, start in enumerate(range(0, len(samples), shard_size)):
        write_tar(root / "grounding" / f"{shard:05d}.tar", samples[start : start + shard_size])
    return len(samples)
