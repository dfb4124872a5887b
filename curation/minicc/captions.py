"""Caption text for scenes: good descriptions (in five languages) and noisy alt texts."""

from __future__ import annotations

import numpy as np

from curation.minicc.vocab import (
    BACKGROUNDS,
    NOISY_ALT_PATTERNS,
    POSITION_PHRASES,
    TRANSLATIONS,
)
from curation.minicc.world import Scene, Shape

_ENGLISH_OPENERS: tuple[str, ...] = ("", "a photo of ", "an illustration of ", "drawing: ")


def _english_shape(shape: Shape) -> str:
    article = "an" if shape.size[0] in "aeiou" else "a"
    return f"{article} {shape.size} {shape.colour} {shape.kind} {POSITION_PHRASES[shape.position]}"


def good_caption(scene: Scene, lang: str = "en", style: int = 0) -> str:
    """A caption that describes every shape of the scene and its background.

    `style` picks among equivalent English phrasings, so identical scenes do not all read alike.
    """
    if lang == "en":
        parts = [_english_shape(s) for s in scene.shapes]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        opener = _ENGLISH_OPENERS[style % len(_ENGLISH_OPENERS)]
        return f"{opener}{body} on a {BACKGROUNDS[scene.background]} background"
    words = TRANSLATIONS[lang]

    def shape_words(s: Shape) -> dict[str, str]:
        return {
            "kind": words["kind"][s.kind],
            "colour": words["colour"][s.colour],
            "size": words["size"][s.size],
            "position": words["position"][s.position],
        }

    background = words["background"][scene.background]
    shapes = [shape_words(s) for s in scene.shapes]
    if lang == "ru":
        # Label style avoids gender agreement, which a word table cannot do.
        items = "; ".join(
            f"{w['kind']} ({w['colour']}, {w['size']}, {w['position']})" for w in shapes
        )
        return f"Фигуры: {items}. Фон: {background}"
    if lang == "ja":
        items = "、".join(f"{w['position']}に{w['size']}{w['colour']}の{w['kind']}" for w in shapes)
        return f"{items}（背景：{background}）"
    if lang == "zh":
        items = "，".join(
            f"{w['position']}有一个{w['size']}的{w['colour']}{w['kind']}" for w in shapes
        )
        return f"{items}，{background}背景"
    if lang == "ko":
        items = ", ".join(
            f"{w['position']}에 {w['size']} {w['colour']} {w['kind']}" for w in shapes
        )
        return f"{items} (배경: {background})"
    raise ValueError(f"no caption grammar for language {lang!r}")


def noisy_alt(rng: np.random.Generator) -> str:
    """An alt text that says nothing about the picture: a file name, "click here", ..."""
    pattern = NOISY_ALT_PATTERNS[int(rng.integers(len(NOISY_ALT_PATTERNS)))]
    return pattern.format(
        n2=int(rng.integers(10, 100)),
        n3=int(rng.integers(100, 1000)),
        n4=int(rng.integers(1000, 10000)),
        n5=f"{int(rng.integers(0, 100000)):05d}",
    )
