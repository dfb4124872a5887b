"""Box conventions of the grounding datasets, all mapped to normalised [x0, y0, x1, y1].

Datasets disagree on three axes: corner/size layout (COCO and Visual Genome give x, y, width,
height; OpenImages gives XMin, XMax, YMin, YMax; others give two corners), units (pixels or
fractions of the image) and origin (0-based continuous coordinates, or 1-based pixel indices as
in VOC-style files). A `BoxConvention` names one combination; `normalise_box` applies it, clips
the box to the image and reports why a box is unusable instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LAYOUTS = ("xywh", "xyxy", "xxyy")
UNITS = ("pixel", "normalised")

# Reasons a box is dropped (counted per reason in the stage stats).
MALFORMED_BOX = "malformed_box"
OUTSIDE_IMAGE = "box_outside_image"
ZERO_AREA = "zero_area_box"


@dataclass(frozen=True)
class BoxConvention:
    layout: str  # xywh: x, y, w, h; xyxy: x0, y0, x1, y1; xxyy: x0, x1, y0, y1 (OpenImages)
    units: str  # pixel or normalised
    one_based: bool = False  # pixel indices start at 1 (only meaningful with pixel units)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"box layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.units not in UNITS:
            raise ValueError(f"box units {self.units!r} are not one of {', '.join(UNITS)}")
        if self.one_based and self.units != "pixel":
            raise ValueError("a 1-based box convention needs pixel units")

    @classmethod
    def parse(cls, spec: str) -> BoxConvention:
        """`xywh-pixel`, `xyxy-normalised`, `xyxy-pixel-1` (1-based), ... as on the command line."""
        parts = spec.split("-")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("0", "1")):
            raise ValueError(
                f"box convention {spec!r}: expected LAYOUT-UNITS[-0|-1], e.g. xywh-pixel"
            )
        return cls(parts[0], parts[1], len(parts) == 3 and parts[2] == "1")

    def spec(self) -> str:
        return f"{self.layout}-{self.units}" + ("-1" if self.one_based else "")


def corners(values: Sequence[float], layout: str) -> tuple[float, float, float, float]:
    """The two corners (x0, y0, x1, y1) of a box given in `layout`."""
    a, b, c, d = values
    if layout == "xywh":
        return a, b, a + c, b + d
    if layout == "xxyy":
        return a, c, b, d
    return a, b, c, d


def normalise_box(
    values: object, convention: BoxConvention, width: int, height: int
) -> tuple[list[float] | None, str | None]:
    """(normalised [x0, y0, x1, y1] clipped to the image, None) or (None, drop reason)."""
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        return None, MALFORMED_BOX
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None, MALFORMED_BOX
    if not all(math.isfinite(v) for v in numbers) or width <= 0 or height <= 0:
        return None, MALFORMED_BOX
    x0, y0, x1, y1 = corners(numbers, convention.layout)
    if x1 < x0 or y1 < y0:
        return None, MALFORMED_BOX
    if convention.units == "pixel":
        if convention.one_based:
            # Pixel indices 1..W name whole pixels: index i covers [i-1, i) in 0-based continuous
            # coordinates, so the box from first to last pixel spans [x0-1, x1).
            x0, y0 = x0 - 1, y0 - 1
        x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
    clipped = [
        min(max(x0, 0.0), 1.0),
        min(max(y0, 0.0), 1.0),
        min(max(x1, 0.0), 1.0),
        min(max(y1, 0.0), 1.0),
    ]
    if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
        return None, OUTSIDE_IMAGE
    if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
        return None, ZERO_AREA
    return [round(v, 6) for v in clipped], None


def pixel_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """A normalised box as the pixel rectangle it covers (left, top, right, bottom exclusive)."""
    x0, y0, x1, y1 = box
    return (
        math.floor(x0 * width),
        math.floor(y0 * height),
        math.ceil(x1 * width),
        math.ceil(y1 * height),
    )
