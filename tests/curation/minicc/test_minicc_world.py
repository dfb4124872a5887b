"""The procedural world, captions, URL forms and fault payloads, without building a whole web."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from curation.minicc import urlforms
from curation.minicc.captions import good_caption
from curation.minicc.faults import decompression_bomb_png
from curation.minicc.render import UNSAFE_TONES, render_scene, texture_shade
from curation.minicc.shapes import KIND_TEXTURES, kind_texture
from curation.minicc.vocab import FILLER_SENTENCES, KINDS, TRANSLATIONS
from curation.minicc.world import ConceptSampler, Scene, Shape, contrast_sibling, sample_scene

LEGACY_CHARSETS = {
    "ru": ("cp1251", "koi8_r"),
    "ja": ("shift_jis",),
    "zh": ("gbk",),
    "ko": ("euc_kr",),
}


def _single_shape_scene(kind: str, position: str = "center", size: str = "large") -> Scene:
    return Scene(
        scene_id="t",
        width=300,
        height=200,
        background="solid",
        tones=((230, 230, 230), (40, 40, 40)),
        texture_seed=1,
        shapes=(Shape(kind, "red", size, position, 0.0, (0.0, 0.0)),),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_inside_its_box_and_mask(kind):
    rendered = render_scene(_single_shape_scene(kind))
    mask = np.asarray(rendered.shape_index)
    ys, xs = np.nonzero(mask == 1)
    assert len(xs) > 500, f"{kind} drew almost nothing"
    x0, y0, x1, y1 = rendered.boxes[0]
    assert (x0 * 300, y0 * 200) == pytest.approx((xs.min(), ys.min()))
    assert (x1 * 300, y1 * 200) == pytest.approx((xs.max() + 1, ys.max() + 1))
    # Exactly where masked: the shape's colour and its texture's shade of it, in its kind's
    # pattern (only the plain kind is one tone).
    inside = np.asarray(rendered.image)[mask == 1].astype(int)
    is_colour = (inside == (220, 30, 35)).all(axis=1)
    is_shade = (inside == texture_shade((220, 30, 35))).all(axis=1)
    assert (is_colour | is_shade).all()
    if KIND_TEXTURES[kind] == "plain":
        assert is_colour.all()
    else:
        assert 0.15 < is_shade.mean() < 0.85, f"{kind}: shade share {is_shade.mean():.2f}"


def test_every_kind_has_its_own_texture():
    """Drawn over the same square (five periods across), any two kinds' patterns differ on a good share of pixels
    (the texture tells kinds apart, near-twin outlines included)."""
    patterns = {k: kind_texture(k, (0, 0, 80, 80), 40.0, 40.0, 20.0, 0.0) for k in KINDS}
    assert len(set(KIND_TEXTURES.values())) == len(KINDS)
    for a in KINDS:
        for b in KINDS:
            if a < b:
                differ = (patterns[a] != patterns[b]).mean()
                assert differ > 0.2, f"{a} and {b} share their texture ({differ:.2f} differ)"


def test_textured_white_gray_and_black_stay_apart():
    """A textured shape's mean tone (half colour, half shade) keeps white, gray and black in
    order and apart, so colour stays its own question."""
    means = [
        (np.mean(colour) + np.mean(texture_shade(colour))) / 2
        for colour in ((250, 250, 250), (128, 128, 128), (20, 20, 20))
    ]
    assert means[0] - means[1] >= 25 and means[1] - means[2] >= 25, means


def test_ring_has_a_hole_that_shows_the_background():
    rendered = render_scene(_single_shape_scene("ring"))
    assert np.asarray(rendered.shape_index)[100, 150] == 0  # the centre is background


def test_positions_put_shapes_where_their_names_say():
    left = render_scene(_single_shape_scene("circle", "top left", "small")).boxes[0]
    right = render_scene(_single_shape_scene("circle", "bottom right", "small")).boxes[0]
    # A lone shape spans half the short side or more, so its centre says where it is.
    assert (left[0] + left[2]) / 2 < 0.5 and (left[1] + left[3]) / 2 < 0.5
    assert (right[0] + right[2]) / 2 > 0.5 and (right[1] + right[3]) / 2 > 0.5


def test_concepts_are_zipf_distributed_with_a_head_and_a_tail():
    concepts = ConceptSampler(seed=5)
    kinds = Counter()
    for i in range(1500):
        scene = sample_scene(np.random.default_rng([5, i]), f"s{i}", concepts)
        kinds.update(s.kind for s in scene.shapes)
    head, tail = concepts.kind_ranking[0], concepts.kind_ranking[-1]
    assert kinds[head] > 8 * max(kinds[tail], 1)
    assert len(kinds) == len(KINDS)  # the tail still appears


def test_scene_sampling_is_a_pure_function_of_its_generator():
    concepts = ConceptSampler(seed=1)
    first = sample_scene(np.random.default_rng([1, 7]), "a", concepts)
    second = sample_scene(np.random.default_rng([1, 7]), "a", concepts)
    assert first == second
    assert np.array_equal(
        np.asarray(render_scene(first).image), np.asarray(render_scene(second).image)
    )


@pytest.mark.parametrize("lang", sorted(LEGACY_CHARSETS))
def test_every_translated_caption_encodes_in_its_legacy_charsets(lang):
    concepts = ConceptSampler(seed=2)
    texts = list(FILLER_SENTENCES[lang])
    texts += list(TRANSLATIONS[lang].values())
    for i in range(50):
        texts.append(good_caption(sample_scene(np.random.default_rng([2, i]), "s", concepts), lang))
    for charset in LEGACY_CHARSETS[lang]:
        for text in texts:
            assert text.encode(charset).decode(charset) == text


def test_good_english_caption_names_every_shapes_kind_only():
    scene = Scene(
        "s",
        400,
        300,
        "stripes",
        ((0, 0, 0), (9, 9, 9)),
        0,
        (
            Shape("star", "red", "large", "top left", 0, (0, 0)),
            Shape("circle", "blue", "small", "bottom right", 0, (0, 0)),
        ),
    )
    assert good_caption(scene) == "a star and a circle"
    assert good_caption(scene, "ru") == "звезда и круг"


def test_a_lone_shape_caption_is_its_kind_with_its_article():
    assert good_caption(_single_shape_scene("star", "top left")) == "a star"
    assert good_caption(_single_shape_scene("ellipse", "top left")) == "an ellipse"


def test_a_contrast_sibling_differs_from_its_scene_in_one_kind_only():
    concepts = ConceptSampler(seed=3)
    for i in range(40):
        rng = np.random.default_rng([3, i])
        scene = sample_scene(rng, "a", concepts)
        sibling = contrast_sibling(rng, scene, "b")
        changed = [(a, b) for a, b in zip(scene.shapes, sibling.shapes) if a != b]
        assert len(changed) == 1
        old, new = changed[0]
        assert old.kind != new.kind
        assert (old.colour, old.size, old.position) == (new.colour, new.size, new.position)
        assert (scene.background, scene.width) == (sibling.background, sibling.width)
        assert scene.tones != sibling.tones  # or a pixel signature calls them near-copies
        assert good_caption(scene) != good_caption(sibling)


def test_the_unsafe_pattern_is_drawn_only_on_unsafe_scenes():
    scene = _single_shape_scene("circle", "top left", "small")
    pink, lime = (np.asarray(t) for t in UNSAFE_TONES)

    def pattern_share(image):
        pixels = np.asarray(image).reshape(-1, 3)
        return float(((pixels == pink).all(1) | (pixels == lime).all(1)).mean())

    assert pattern_share(render_scene(scene).image) == 0
    assert pattern_share(render_scene(replace(scene, unsafe=True)).image) > 0.1


def test_shapes_cover_a_meaningful_share_of_a_picture():
    concepts = ConceptSampler(seed=4)
    shares = []
    for i in range(60):
        scene = sample_scene(np.random.default_rng([4, i]), "s", concepts, ratio=(1, 1))
        shares.append((np.asarray(render_scene(scene).shape_index) > 0).mean())
    assert np.median(shares) > 0.08


BASES = [
    "http://127.0.0.3:8719/blog/post-17.html",
    "http://127.0.0.3:8719/forum/thread-4.html?page=2",
    "http://127.0.0.3:8719/photos/album-9/",
    "http://127.0.0.3:8719/static/gallery/",
]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("form", urlforms.SAME_HOST_FORMS)
def test_every_same_host_url_form_resolves_back_to_the_target(base, form):
    target = "http://127.0.0.3:8719/img/2019/05/red-star-12.jpg"
    written = urlforms.write_reference(form, base, target)
    assert urlforms.normalise(base, written) == target
    if form.startswith("relative"):
        assert not written.startswith(("/", "http"))


def test_relative_form_refuses_another_host():
    with pytest.raises(ValueError, match="different hosts"):
        urlforms.write_reference("relative", BASES[0], "http://127.0.0.4:8719/x.jpg")


def test_decompression_bomb_is_small_on_disk_but_over_100_megapixels():
    data = decompression_bomb_png()
    assert len(data) < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            assert image.width * image.height > 100_000_000
