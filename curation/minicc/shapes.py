"""Outlines of the world's shape kinds, as polygons around a centre.

Each kind is a list of (polygon, filled) pairs: a filled polygon adds to the shape, an unfilled one
cuts a hole (the ring). Polygons are in pixels, for a shape of radius `r` centred at (cx, cy) and
rotated by `rotation` degrees, so one code path draws every kind and yields its exact mask.
"""

from __future__ import annotations

import math

Point = tuple[float, float]
Outline = list[tuple[list[Point], bool]]


def _regular_polygon(sides: int, start_deg: float) -> list[Point]:
    step = 2 * math.pi / sides
    start = math.radians(start_deg)
    return [(math.cos(start + i * step), math.sin(start + i * step)) for i in range(sides)]


def _ellipse(rx: float, ry: float, segments: int = 72) -> list[Point]:
    return [
        (rx * math.cos(2 * math.pi * i / segments), ry * math.sin(2 * math.pi * i / segments))
        for i in range(segments)
    ]


def _star(points: int = 5, inner: float = 0.45) -> list[Point]:
    out = []
    for i in range(2 * points):
        radius = 1.0 if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / points
        out.append((radius * math.cos(angle), radius * math.sin(angle)))
    return out


def _heart(segments: int = 80) -> list[Point]:
    # The classic parametric heart, scaled into the unit square and flipped so it points down.
    pts = []
    for i in range(segments):
        t = 2 * math.pi * i / segments
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -y / 17.0 + 0.1))
    return pts


_CROSS = [
    (-0.33, -1),
    (0.33, -1),
    (0.33, -0.33),
    (1, -0.33),
    (1, 0.33),
    (0.33, 0.33),
    (0.33, 1),
    (-0.33, 1),
    (-0.33, 0.33),
    (-1, 0.33),
    (-1, -0.33),
    (-0.33, -0.33),
]
_ARROW = [(-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75), (0.2, 0.3), (-1, 0.3)]

# Unit outlines (radius 1); a False flag marks a hole.
_UNIT_OUTLINES: dict[str, Outline] = {
    "circle": [(_ellipse(1, 1), True)],
    "square": [([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)], True)],
    "triangle": [(_regular_polygon(3, -90), True)],
    "star": [(_star(), True)],
    "hexagon": [(_regular_polygon(6, 0), True)],
    "ellipse": [(_ellipse(1, 0.55), True)],
    "cross": [(_CROSS, True)],
    "heart": [(_heart(), True)],
    "diamond": [([(0, -1), (0.7, 0), (0, 1), (-0.7, 0)], True)],
    "ring": [(_ellipse(1, 1), True), (_ellipse(0.58, 0.58), False)],
    "pentagon": [(_regular_polygon(5, -90), True)],
    "arrow": [(_ARROW, True)],
}

# Kinds whose identity a rotation would blur (a rotated square reads as a diamond).
ROTATION_FREE_KINDS = frozenset({"square", "diamond", "circle", "ring"})


def shape_outline(kind: str, cx: float, cy: float, r: float, rotation: float) -> Outline:
    """The polygons of one shape of `kind`, in pixel coordinates."""
    try:
        unit = _UNIT_OUTLINES[kind]
    except KeyError:
        raise ValueError(f"unknown shape kind {kind!r}; known: {sorted(_UNIT_OUTLINES)}") from None
    angle = 0.0 if kind in ROTATION_FREE_KINDS else math.radians(rotation)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    outline: Outline = []
    for polygon, filled in unit:
        placed = [
            (cx + r * (x * cos_a - y * sin_a), cy + r * (x * sin_a + y * cos_a)) for x, y in polygon
        ]
        outline.append((placed, filled))
    return outline
