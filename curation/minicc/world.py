"""The procedural world: scenes of 1-3 shapes of known kind, colour, size and position.

A scene is a plain description (no pixels); `render.render_scene` turns it into an image, a
label mask and boxes. Concepts are Zipf-distributed: kinds and colours are ranked by a seeded
permutation and drawn with probability ~ 1 / rank**ZIPF_EXPONENT, so a few "head" concepts dominate
and the kind+colour pairs have a long tail, which is what MetaCLIP balancing is meant to flatten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from curation.minicc.vocab import (
    COLOURS,
    KINDS,
    POSITION_PHRASES,
    POSITIONS,
    SCENE_BACKGROUNDS,
    SIZES,
)

ZIPF_EXPONENT = 1.3
# How many shapes a web scene holds (1, 2, 3): mostly one, so a shape fills much of the picture.
SHAPE_COUNT_WEIGHTS = (0.6, 0.3, 0.1)

# (width : height, weight). A share of extreme ratios so aspect-ratio handling matters.
ASPECT_RATIOS: tuple[tuple[float, float, float], ...] = (
    (1, 1, 0.28),
    (4, 3, 0.18),
    (3, 4, 0.12),
    (16, 9, 0.14),
    (9, 16, 0.08),
    (3, 2, 0.08),
    (3, 1, 0.06),
    (1, 3, 0.06),
)
EXTREME_ASPECT_RATIOS: tuple[tuple[float, float], ...] = ((3, 1), (1, 3), (4, 1), (1, 4))

# Long-side pixel ranges and their weights: most images are small, a share is large.
LONG_SIDE_BANDS: tuple[tuple[int, int, float], ...] = (
    (128, 400, 0.45),
    (400, 900, 0.35),
    (900, 1600, 0.20),
)

# Muted background tones; a tone is only used when it stands apart from every shape colour.
BACKGROUND_TONES: tuple[tuple[int, int, int], ...] = (
    (236, 226, 205),
    (205, 214, 222),
    (60, 66, 80),
    (222, 236, 222),
    (180, 170, 150),
    (40, 44, 52),
    (238, 238, 238),
    (150, 160, 175),
    (90, 110, 90),
    (215, 200, 225),
)
_MIN_TONE_DISTANCE = 110.0


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    position: str
    rotation: float  # degrees; ignored for rotation-free kinds
    offset: tuple[float, float]  # small jitter of the centre, in fractions of (width, height)

    @property
    def phrase(self) -> str:
        """The short referring phrase, e.g. "red star"."""
        return f"{self.colour} {self.kind}"

    @property
    def referring_expression(self) -> str:
        """The phrase that singles the shape out in its scene, as RefCOCO's annotators write
        them: "the red star at the top left" (a scene may hold two red stars)."""
        return f"the {self.phrase} {POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    scene_id: str
    width: int
    height: int
    background: str
    tones: tuple[tuple[int, int, int], tuple[int, int, int]]
    texture_seed: int
    shapes: tuple[Shape, ...]
    # The abstract "unsafe" stand-in concept (render.py draws its pattern): a labelled image
    # property for testing an image-side safety filter; most of its alt texts say so
    # (captions.unsafe_alt), as unsafe pages' alt texts often do on the web.
    unsafe: bool = False
    # The scene this one is a hard negative of (contrast_sibling), or None.
    contrast_of: str | None = None

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def grounding_refs(self, boxes) -> list[dict]:
        """[{"phrase", "box"}] per shape, as grounding shards and the refexp eval set store them:
        the shape's referring expression and its rendered box (normalised, 5 decimals)."""
        return [
            {"phrase": shape.referring_expression, "box": [round(float(v), 5) for v in box]}
            for shape, box in zip(self.shapes, boxes)
        ]


def zipf_weights(n: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


class ConceptSampler:
    """Draws kinds and colours with a seeded Zipf ranking (the head differs per seed)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 0x5EED])
        self.kind_ranking: list[str] = [KINDS[i] for i in rng.permutation(len(KINDS))]
        self.colour_ranking: list[str] = [list(COLOURS)[i] for i in rng.permutation(len(COLOURS))]
        self._kind_p = zipf_weights(len(KINDS))
        self._colour_p = zipf_weights(len(COLOURS))

    def kind(self, rng: np.random.Generator) -> str:
        return self.kind_ranking[rng.choice(len(KINDS), p=self._kind_p)]

    def colour(self, rng: np.random.Generator) -> str:
        return self.colour_ranking[rng.choice(len(COLOURS), p=self._colour_p)]


def _tone_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return math.dist(a, b)


def _pick_tones(
    rng: np.random.Generator, colours: list[str], avoid: tuple = ()
) -> tuple[tuple[int, int, int], ...]:
    """Two background tones that stand apart from every shape colour (and, where enough remain,
    are not the tones in `avoid`)."""
    usable = [
        t
        for t in BACKGROUND_TONES
        if all(_tone_distance(t, COLOURS[c]) >= _MIN_TONE_DISTANCE for c in colours)
    ]
    fresh = [t for t in usable if t not in avoid]
    if len(fresh) >= 2:
        usable = fresh
    if len(usable) < 2:
        usable = sorted(
            BACKGROUND_TONES, key=lambda t: -min(_tone_distance(t, COLOURS[c]) for c in colours)
        )[:2]
    first, second = rng.choice(len(usable), size=2, replace=False)
    return usable[first], usable[second]


def sample_size(
    rng: np.random.Generator,
    ratio: tuple[float, float],
    long_side_range: tuple[int, int] | None = None,
) -> tuple[int, int]:
    if long_side_range is None:
        band = rng.choice(len(LONG_SIDE_BANDS), p=[b[2] for b in LONG_SIDE_BANDS])
        long_side_range = LONG_SIDE_BANDS[band][:2]
    long_side = int(rng.integers(long_side_range[0], long_side_range[1] + 1))
    w, h = ratio
    if w >= h:
        return long_side, max(32, round(long_side * h / w))
    return max(32, round(long_side * w / h)), long_side


def sample_scene(
    rng: np.random.Generator,
    scene_id: str,
    concepts: ConceptSampler,
    *,
    shape_count: int | None = None,
    ratio: tuple[float, float] | None = None,
    long_side_range: tuple[int, int] | None = None,
) -> Scene:
    """One scene; every choice is drawn from `rng`, so the caller controls determinism."""
    if ratio is None:
        index = rng.choice(len(ASPECT_RATIOS), p=[a[2] for a in ASPECT_RATIOS])
        ratio = ASPECT_RATIOS[index][:2]
    width, height = sample_size(rng, ratio, long_side_range)
    if shape_count is None:
        shape_count = int(rng.choice([1, 2, 3], p=SHAPE_COUNT_WEIGHTS))
    positions = [list(POSITIONS)[i] for i in rng.permutation(len(POSITIONS))[:shape_count]]
    shapes: list[Shape] = []
    seen_phrases: set[str] = set()
    for position in positions:
        # Distinct kind+colour inside one scene, so "the red star" names exactly one shape.
        while True:
            kind, colour = concepts.kind(rng), concepts.colour(rng)
            if f"{colour} {kind}" not in seen_phrases:
                break
        seen_phrases.add(f"{colour} {kind}")
        size = list(SIZES)[int(rng.choice(len(SIZES), p=[0.35, 0.4, 0.25]))]
        shapes.append(
            Shape(
                kind=kind,
                colour=colour,
                size=size,
                position=position,
                rotation=float(rng.uniform(-12, 12)),
                offset=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
            )
        )
    background = SCENE_BACKGROUNDS[int(rng.integers(len(SCENE_BACKGROUNDS)))]
    return Scene(
        scene_id=scene_id,
        width=width,
        height=height,
        background=background,
        tones=_pick_tones(rng, [s.colour for s in shapes]),
        texture_seed=int(rng.integers(2**31)),
        shapes=tuple(shapes),
    )


def contrast_sibling(rng: np.random.Generator, scene: Scene, scene_id: str) -> Scene:
    """A hard negative of `scene`: the same size, background kind, colours, sizes and positions,
    one shape's kind changed, so only reading the kind tells the two captions apart. Its
    background tones are drawn anew: with the first scene's pixels around a changed shape the
    two pictures were near-duplicates to a pixel signature, and near-dup removal dropped one."""
    index = int(rng.integers(len(scene.shapes)))
    taken = {s.phrase for s in scene.shapes}
    old = scene.shapes[index]
    kinds = [k for k in KINDS if k != old.kind and f"{old.colour} {k}" not in taken]
    kind = kinds[int(rng.integers(len(kinds)))]
    shapes = list(scene.shapes)
    shapes[index] = Shape(kind, old.colour, old.size, old.position, old.rotation, old.offset)
    return replace(
        scene,
        scene_id=scene_id,
        shapes=tuple(shapes),
        tones=_pick_tones(rng, [s.colour for s in shapes], avoid=scene.tones),
        texture_seed=int(rng.integers(2**31)),
        contrast_of=scene.scene_id,
    )


def shapeless_scene(rng: np.random.Generator, scene_id: str, kind: str) -> Scene:
    """A bad picture with nothing to learn: `blank` (one flat tone, web-sized) or `banner` (a
    728x90 / 468x60 / 970x250 strip of stripes, as ad banners are)."""
    if kind == "blank":
        width, height = sample_size(rng, (4, 3))
        background = "solid"
    elif kind == "banner":
        width, height = ((728, 90), (468, 60), (970, 250))[int(rng.integers(3))]
        background = "stripes"
    else:
        raise ValueError(f"unknown shapeless picture kind {kind!r}")
    first, second = rng.choice(len(BACKGROUND_TONES), size=2, replace=False)
    return Scene(
        scene_id=scene_id,
        width=width,
        height=height,
        background=background,
        tones=(BACKGROUND_TONES[first], BACKGROUND_TONES[second]),
        texture_seed=int(rng.integers(2**31)),
        shapes=(),
    )


def concept_list() -> list[str]:
    """Every concept MetaCLIP balancing should know: kinds, colours and "colour kind" phrases."""
    return [*KINDS, *COLOURS, *(f"{c} {k}" for c in COLOURS for k in KINDS)]
