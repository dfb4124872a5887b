"""Caption text for scenes: good descriptions (in five languages) and the web's useless alt texts.

A good caption is alt text that names what the picture shows, in a fixed form: its shapes'
kinds, in the scene's order ("a star", "a star and a ring"), and nothing else. Generator 5's
captions also named each shape's size, colour and position and the background; at `tiny`'s
budget those words fit a batch's pairs without the kind, and the kind was never learnt
(benchmarks/kind_contrastive.py: 11% zero-shot against 18-25% for kind-only captions).
"""

from __future__ import annotations

import numpy as np

from curation.minicc.vocab import (
    BOILERPLATE_ALTS,
    COLOURS,
    FILENAME_ALT_PATTERNS,
    KINDS,
    LONG_EMPTY_SENTENCES,
    SEO_WORDS,
    TRANSLATIONS,
)
from curation.minicc.world import Scene


def english_list(parts: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def good_caption(scene: Scene, lang: str = "en") -> str:
    """Alt text naming every shape's kind, in `lang`."""
    if not scene.shapes:
        raise ValueError(f"scene {scene.scene_id} shows no shape: it has no good caption")
    kinds = [shape.kind for shape in scene.shapes]
    if lang == "en":
        return english_list([f"{'an' if k[0] in 'aeiou' else 'a'} {k}" for k in kinds])
    if lang not in TRANSLATIONS:
        raise ValueError(f"no caption grammar for language {lang!r}")
    words = [TRANSLATIONS[lang][k] for k in kinds]
    if lang == "ru":
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " и " + words[-1]
    if lang == "ja":
        return "と".join(words)
    if lang == "zh":
        return "和".join(words)
    return ", ".join(words)  # ko


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
