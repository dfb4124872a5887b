"""The licence line each ingested source carries into its rows and grounding samples.

What we know is stated; what we could not verify says "check the dataset's terms". This is a
record for the people who assemble a training mix, not legal advice: the terms that bind are the
dataset's own, and the images keep their owners' rights whatever the annotation licence is.
"""

from __future__ import annotations

CHECK = "check the dataset's terms"
LICENCES: dict[str, str] = {
    "laion": "metadata CC BY 4.0 (LAION); images: their owners' rights",
    "datacomp": "metadata CC BY 4.0 (DataComp CommonPool); images: their owners' rights",
    "openimages": "annotations CC BY 4.0; images listed as CC BY 2.0 (per-image licence in the image list)",
    "objects365": f"CC BY 4.0 as stated by objects365.org ({CHECK})",
    "visualgenome": "CC BY 4.0 (Visual Genome); images: their owners' rights",
    "refcoco": f"annotations: {CHECK}; boxes: COCO CC BY 4.0; images: Flickr terms (COCO)",
    "refcoco+": f"annotations: {CHECK}; boxes: COCO CC BY 4.0; images: Flickr terms (COCO)",
    "refcocog": f"annotations: {CHECK}; boxes: COCO CC BY 4.0; images: Flickr terms (COCO)",
    "grand": f"model-generated annotations: {CHECK}; images: SA-1B research licence",
}


def licence_of(source: str) -> str:
    """The licence line of a known source; an unknown source gets the 'check' line."""
    return LICENCES.get(source, CHECK)
