"""Caption text for scenes: good descriptions (in five languages) and the web's useless alt texts.

A good caption names every shape's size, colour and kind; a position only when the scene holds
more than one shape (where it tells them apart), so a batch's captions differ mostly in what a
picture shows, not in where.
"""

from __future__ import annotations

import numpy as np

from curation.minicc.vocab import (
    BACKGROUNDS,
    BOILERPLATE_ALTS,
    COLOURS,
    FILENAME_ALT_PATTERNS,
    KINDS,
    LONG_EMPTY_SENTENCES,
    POSITION_PHRASES,
    SEO_WORDS,
    TRANSLATIONS,
)
from curation.minicc.world import Scene, Shape

_ENGLISH_OPENERS: tuple[str, ...] = ("", "a photo of ", "an illustration of ", "drawing: ")


def _english_shape(shape: Shape, placed: bool) -> str:
    article = "an" if shape.size[0] in "aeiou" else "a"
    where = f" {POSITION_PHRASES[shape.position]}" if placed else ""
    return f"{article} {shape.size} {shape.colour} {shape.kind}{where}"


def english_list(parts: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def good_caption(scene: Scene, lang: str = "en", style: int = 0) -> str:
    """A caption that describes every shape of the scene and its background.

    `style` picks among equivalent English phrasings, so identical scenes do not all read alike.
    """
    if not scene.shapes:
        raise ValueError(f"scene {scene.scene_id} shows no shape: it has no good caption")
    placed = len(scene.shapes) > 1
    if lang == "en":
        parts = [_english_shape(s, placed) for s in scene.shapes]
        body = english_list(parts)
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
            f"{w['kind']} ({w['colour']}, {w['size']}" + (f", {w['position']})" if placed else ")")
            for w in shapes
        )
        return f"Фигуры: {items}. Фон: {background}"
    if lang == "ja":
        items = "、".join(
            (f"{w['position']}に" if placed else "") + f"{w['size']}{w['colour']}の{w['kind']}"
            for w in shapes
        )
        return f"{items}（背景：{background}）"
    if lang == "zh":
        items = "，".join(
            (f"{w['position']}有" if placed else "有")
            + f"一个{w['size']}的{w['colour']}{w['kind']}"
            for w in shapes
        )
        return f"{items}，{background}背景"
    if lang == "ko":
        items = ", ".join(
            (f"{w['position']}에 " if placed else "") + f"{w['size']} {w['colour']} {w['kind']}"
            for w in shapes
        )
        return f"{items} (배경: {background})"
    raise ValueError(f"no caption grammar for language {lang!r}")


def _fill(pattern: str, rng: np.random.Generator) -> str:
    return pattern.format(
        n2=int(rng.integers(10, 100)),
        n3=int(rng.integers(100, 1000)),
        n4=int(rng.integers(1000, 10000)),
        n5=f"{int(rng.integers(0, 100000)):05d}",
    )


def filename_alt(rng: np.random.Generator, path: str) -> str:
    """A file name for alt text: the image URL's own last segment, or a camera/CMS name."""
    if rng.random() < 0.5:
        return path.rsplit("/", 1)[-1]
    return _fill(FILENAME_ALT_PATTERNS[int(rng.integers(len(FILENAME_ALT_PATTERNS)))], rng)


def boilerplate_alt(rng: np.random.Generator) -> str:
    """An alt text that says nothing about the picture: "logo", "click here", ..."""
    return _fill(BOILERPLATE_ALTS[int(rng.integers(len(BOILERPLATE_ALTS)))], rng)


def seo_alt(rng: np.random.Generator) -> str:
    """A keyword list stuffed for search engines: shape words the picture may not show, mixed
    with shopping words, so a bag-of-words match finds concepts in it."""
    words = [KINDS[int(i)] for i in rng.choice(len(KINDS), size=3, replace=False)]
    words += [list(COLOURS)[int(i)] for i in rng.choice(len(COLOURS), size=2, replace=False)]
    words += [SEO_WORDS[int(i)] for i in rng.choice(len(SEO_WORDS), size=4, replace=False)]
    order = rng.permutation(len(words))
    return ", ".join(words[int(i)] for i in order)


def empty_but_long_alt(rng: np.random.Generator) -> str:
    """Long alt text with no description in it (legal lines, site names, "image of image")."""
    count = int(rng.integers(2, 4))
    picks = rng.choice(len(LONG_EMPTY_SENTENCES), size=count, replace=False)
    return " ".join(LONG_EMPTY_SENTENCES[int(i)] for i in picks)


UNSAFE_ALT_SHARE = 0.8  # of an unsafe picture's alt texts, the share that name it
UNSAFE_ALT_TAGS: tuple[str, ...] = ("unsafe", "unsafe content", "marked unsafe")


def unsafe_alt(alt: str | None, scene: Scene, salt: tuple[int, ...] = ()) -> str | None:
    """The alt text of a tag showing an unsafe scene, naming it most of the time (prefixed), as
    the alt texts of unsafe pictures on the web often do, whatever else they say; so an encoder
    trained on the pairs can learn the concept, as CLIP learns real ones. Other scenes' alts,
    and empty ones, come back unchanged. The draw comes from the scene's own seed and `salt`
    (the tag's place), never from the page planner's stream, so nothing else moves."""
    if not scene.unsafe or not alt:
        return alt
    rng = np.random.default_rng([scene.texture_seed, 0xA17, *salt])
    if rng.random() >= UNSAFE_ALT_SHARE:
        return alt
    return f"{UNSAFE_ALT_TAGS[int(rng.integers(len(UNSAFE_ALT_TAGS)))]}: {alt}"
