"""The real face photos that ship inside scikit-image's wheel (no download), for measuring a face
detector's recall offline: skimage's LFW subset (100 face crops, 100 non-face crops) and the
astronaut and camera pictures, against face-free sample pictures. Used by
tests/curation/ingest/test_face_detect.py and by the demo's filters report."""

from __future__ import annotations

import numpy as np
from PIL import Image

SOURCE = (
    "scikit-image's sample data (in its wheel): 100 LFW face crops upscaled to 112 px, "
    "the astronaut and camera photos"
)
FACE_FREE = (
    "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "horse", "coins",
    "hubble_deep_field", "immunohistochemistry", "colorwheel", "page", "text", "moon", "logo",
    "retina", "microaneurysms", "cell", "clock", "binary_blobs",
)  # fmt: skip


def rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = (image / max(float(image.max()), 1e-9) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def lfw(upscale: int = 112) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """skimage's LFW subset: 100 25x25 face crops, then 100 non-face crops, upscaled."""
    from skimage import data

    crops = [
        np.asarray(Image.fromarray(rgb(c)).resize((upscale, upscale), Image.Resampling.BICUBIC))
        for c in data.lfw_subset()
    ]
    return crops[:100], crops[100:]


def sample_pictures() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(pictures with a face, pictures without one)."""
    from skimage import data

    faces, non_faces = lfw()
    faces += [rgb(data.astronaut()), rgb(data.camera())]
    free = [rgb(getattr(data, name)()) for name in FACE_FREE] + non_faces
    return faces, free


def measure(detector) -> dict[str, float]:
    """Recall on the face pictures and false-positive rate on the face-free ones, with counts."""
    faces, free = sample_pictures()
    hits = sum(bool(detector.detect(image)) for image in faces)
    false = sum(bool(detector.detect(image)) for image in free)
    return {
        "faces": len(faces),
        "detected": hits,
        "recall": hits / len(faces),
        "face_free": len(free),
        "false_positives": false,
        "false_positive_rate": false / len(free),
    }
