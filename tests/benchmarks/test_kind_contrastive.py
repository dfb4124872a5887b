"""kind_contrastive.py's pairs: kind-only captions name exactly the kinds drawn, a contrast
sibling's caption differs from its picture's in one kind word only, and --noise swaps captions,
never pictures, at its share."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from curation.minicc.captions import good_caption
from curation.minicc.vocab import KINDS
from curation.minicc.world import ConceptSampler, sample_scene
from training.data.samples import decode_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import kind_contrastive


def test_kinds_caption_names_every_kind_and_nothing_else():
    scene = sample_scene(np.random.default_rng(4), "s", ConceptSampler(0), shape_count=3)
    caption = kind_contrastive.kinds_caption(scene)
    words = caption.replace(",", "").split()
    assert [w for w in words if w in KINDS] == [s.kind for s in scene.shapes]
    assert set(words) <= {"a", "and", *KINDS}


def test_sibling_caption_differs_in_one_kind_word():
    for index in range(6):
        (jpeg, caption), (sibling_jpeg, sibling_caption) = kind_contrastive.pair(
            0, "web", "kind", True, None, None, 0.0, (), index
        )
        words, sibling_words = caption.split(), sibling_caption.split()
        changed = [(a, b) for a, b in zip(words, sibling_words) if a != b]
        assert len(words) == len(sibling_words) and len(changed) == 1, (caption, sibling_caption)
        assert changed[0][0].strip(",") in KINDS and changed[0][1].strip(",") in KINDS
        assert not decode_image(jpeg, 64).equal(decode_image(sibling_jpeg, 64))


def test_single_scene_kind_caption_is_the_drawn_kind():
    captions = {
        kind_contrastive.pair(0, "single", "kind", False, None, None, 0.0, (), i)[0][1]
        for i in range(12)
    }
    assert captions <= {f"a {kind}" for kind in KINDS} and len(captions) > 3


def test_web_options_set_the_shape_count_and_the_colours():
    # Every scene single-shape, in two colours only; its colour caption is "a COLOUR KIND".
    for index in range(8):
        [(_, caption)] = kind_contrastive.pair(
            0, "web", "colour", False, (1.0, 0.0, 0.0), 2, 0.0, (), index
        )
        article, colour, kind = caption.split()
        assert article == "a" and colour in ("red", "blue") and kind in KINDS, caption


def test_mix_captions_keep_their_shares_and_always_name_the_kinds():
    scenes = [
        sample_scene(np.random.default_rng([9, i]), f"m-{i}", ConceptSampler(0), shape_count=1)
        for i in range(400)
    ]
    colour = 0
    for scene in scenes:
        caption = kind_contrastive.scene_caption(scene, "mix")
        assert scene.shapes[0].kind in caption
        if caption == kind_contrastive.colour_caption(scene):
            colour += 1
        else:  # kind only, or the world's good caption (generator 6: the kinds too)
            assert caption in (kind_contrastive.kinds_caption(scene), good_caption(scene))
    # MIX_SHARES' colour share, within ~4 standard errors of 400 draws.
    assert abs(colour / len(scenes) - kind_contrastive.MIX_SHARES[1]) < 0.09


def test_noise_swaps_the_caption_of_its_share_of_pictures_and_never_the_picture():
    kinds = kind_contrastive.NOISE_KINDS
    drawn = [kind_contrastive.noise_kind(i, 0.2, kinds)[0] for i in range(3000)]
    assert abs(sum(k is not None for k in drawn) / len(drawn) - 0.2) < 0.03
    assert {k for k in drawn if k is not None} == set(kinds)
    only = [kind_contrastive.noise_kind(i, 0.2, ("seo",))[0] for i in range(200)]
    assert set(only) == {None, "seo"}
    noisy = [i for i, k in enumerate(drawn[:40]) if k is not None]
    for index in noisy[:4]:
        [(jpeg, caption)] = kind_contrastive.pair(
            0, "web", "kind", False, None, None, 0.2, kinds, index
        )
        [(clean_jpeg, clean_caption)] = kind_contrastive.pair(
            0, "web", "kind", False, None, None, 0.0, (), index
        )
        assert jpeg == clean_jpeg and caption != clean_caption, (drawn[index], caption)
