"""kind_contrastive.py's pairs: kind-only captions name exactly the kinds drawn, and a contrast
sibling's caption differs from its picture's in one kind word only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

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
            0, "web", "full", True, index
        )
        words, sibling_words = caption.split(), sibling_caption.split()
        changed = [(a, b) for a, b in zip(words, sibling_words) if a != b]
        assert len(words) == len(sibling_words) and len(changed) == 1, (caption, sibling_caption)
        assert changed[0][0].strip(",") in KINDS and changed[0][1].strip(",") in KINDS
        assert not decode_image(jpeg, 64).equal(decode_image(sibling_jpeg, 64))


def test_single_scene_kind_caption_is_the_drawn_kind():
    captions = {kind_contrastive.pair(0, "single", "kind", False, i)[0][1] for i in range(12)}
    assert captions <= {f"a {kind}" for kind in KINDS} and len(captions) > 3
