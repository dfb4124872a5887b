"""Outlines and surface textures of the world's shape kinds.

Each kind is a list of (polygon, filled) pairs: a filled polygon adds to the shape, an unfilled one
cuts a hole (the ring). Polygons are in pixels, for a shape of radius `r` centred at (cx, cy) and
rotated by `rotation` degrees, so one code path draws every kind and yields its exact mask.

Each kind also has its own surface texture (generator 4), the way real categories do (a zebra's
stripes, a strawberry's seeds): `kind_texture` gives, per pixel, how much of the darker (or
lighter) shade of the shape's colour a pixel takes. The pattern's period is a fixed fraction of
the shape's radius, so it survives the squash to `tiny`'s 64-px input (about 8 px a period for a
lone small shape there: one 8-px patch sees an edge of it), while the outline of a 20-40 px shape
alone took a depth-2 ViT thousands of steps to read (benchmarks/kind_supervised.py). Both shades
are of the shape's own colour, so colour stays its own question, and the outline is kept.
"""

from __future__ import annotations

import math

import numpy as np

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


# kind -> its surface pattern. Near-twin outlines (circle/ellipse/ring, square/diamond,
# hexagon/pentagon) get patterns that differ most.
KIND_TEXTURES: dict[str, str] = {
    "circle": "rings",
    "square": "checks",
    "triangle": "horizontal stripes",
    "star": "dots",
    "hexagon": "vertical stripes",
    "ellipse": "rising stripes",
    "cross": "plain",
    "heart": "falling stripes",
    "diamond": "grid",
    "ring": "spokes",
    "pentagon": "diagonal checks",
    "arrow": "waves",
}
# A period of the pattern, as a fraction of the shape's radius. kind_supervised.py's ViT, 800
# steps (held-out top-1, chance 8.3%): no texture 27%; period 0.5 with the shade at 0.7 of the
# colour 28%; 0.8 / 0.55 52%; 1.0 / 0.55 54%; 1.3 / 0.55 47%; 0.8 / 0.4 60% (the one kept).
TEXTURE_PERIOD = 0.8


def _pattern(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where `name` takes the second shade (bool), at (u, v) in periods from the shape's centre."""
    frac = np.mod
    if name == "plain":
        return np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    if name == "rings":
        return frac(np.hypot(u, v), 1.0) < 0.5
    if name == "checks":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    if name == "horizontal stripes":
        return np.broadcast_to(frac(v, 1.0) < 0.5, np.broadcast_shapes(u.shape, v.shape))
    if name == "vertical stripes":
        return np.broadcast_to(frac(u, 1.0) < 0.5, np.broadcast_shapes(u.shape, v.shape))
    if name == "dots":
        return np.hypot(frac(u, 1.0) - 0.5, frac(v, 1.0) - 0.5) < 0.3
    if name == "rising stripes":
        return frac((u - v) / math.sqrt(2), 1.0) < 0.5
    if name == "falling stripes":
        return frac((u + v) / math.sqrt(2), 1.0) < 0.5
    if name == "grid":
        return np.minimum(frac(u, 1.0), frac(v, 1.0)) < 0.3
    if name == "spokes":
        return np.floor((np.arctan2(v, u) / (2 * math.pi) + 0.5) * 10) % 2 == 0
    if name == "diagonal checks":
        a, b = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
        return (np.floor(a) + np.floor(b)) % 2 == 0
    if name == "waves":
        return frac(v + 0.3 * np.sin(2 * math.pi * u), 1.0) < 0.5
    raise ValueError(f"unknown texture {name!r}")


def kind_texture(
    kind: str, box: tuple[int, int, int, int], cx: float, cy: float, r: float, rotation: float
) -> np.ndarray:
    """The shade mask (float32 in [0, 1], 1 = second shade) of `kind`'s texture over the pixel
    box (left, top, right, bottom), for a shape of radius `r` centred at (cx, cy). The pattern
    turns with the shape (except for rotation-free kinds, as its outline does)."""
    left, top, right, bottom = box
    period = max(TEXTURE_PERIOD * r, 1e-6)
    xs = (np.arange(left, right, dtype=np.float32) + 0.5 - cx) / period
    ys = (np.arange(top, bottom, dtype=np.float32) + 0.5 - cy) / period
    angle = 0.0 if kind in ROTATION_FREE_KINDS else math.radians(rotation)
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    u = xs[None, :] * cos_a + ys[:, None] * sin_a
    v = -xs[None, :] * sin_a + ys[:, None] * cos_a
    try:
        name = KIND_TEXTURES[kind]
    except KeyError:
        raise ValueError(f"unknown shape kind {kind!r}; known: {sorted(KIND_TEXTURES)}") from None
    return _pattern(name, u, v).astype(np.float32)
