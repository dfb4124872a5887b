"""The alt text of the mini web's unsafe stand-in pictures names it most of the time (as unsafe
pictures' alt texts often do on the web); every other alt text is left alone."""

from dataclasses import replace

import numpy as np

from curation.minicc.captions import UNSAFE_ALT_SHARE, UNSAFE_ALT_TAGS, good_caption, unsafe_alt
from curation.minicc.world import ConceptSampler, sample_scene


def scenes(count: int) -> list:
    concepts = ConceptSampler(seed=4)
    return [sample_scene(np.random.default_rng([9, i]), f"s{i}", concepts) for i in range(count)]


def test_a_safe_scenes_alt_is_unchanged_and_an_unsafe_ones_mostly_names_it():
    named = 0
    drawn = scenes(400)
    for index, scene in enumerate(drawn):
        caption = good_caption(scene, "en")
        salt = (index, 3)
        assert unsafe_alt(caption, scene, salt) == caption
        unsafe = replace(scene, unsafe=True)
        assert unsafe_alt("", unsafe, salt) == "" and unsafe_alt(None, unsafe, salt) is None
        alt = unsafe_alt(caption, unsafe, salt)
        assert alt == unsafe_alt(caption, unsafe, salt)  # deterministic
        if alt != caption:
            tag, rest = alt.split(": ", 1)
            assert tag in UNSAFE_ALT_TAGS and rest == caption
            named += 1
    # Binomial(400, 0.8): 320 +- 8; 4 sigma either way.
    assert abs(named - UNSAFE_ALT_SHARE * len(drawn)) < 4 * (len(drawn) * 0.16) ** 0.5
