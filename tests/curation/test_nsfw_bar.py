"""Issue 23's bar for the NSFW filter, on planted truth: at least 95% of the planted unsafe
pictures removed at a false-removal rate of 2% or less, measured on rows the head never saw.

The pictures are the mini web's own (world.sample_scene, render.render_scene; a seeded share
carries the unsafe stand-in), taken through the download stage's image processing and the
scorer's own preprocessing, and embedded by a randomly initialised tiny-clip: the weakest
scorer the pipeline runs (the demo's is trained on alt texts that name the stand-in). The head
is fitted by `fit_head` with nsfw-fit's default settings on one half and measured on the other.
A control fits the same head on labels that no picture shows and must miss the bar, so the
measurement can fail.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from curation.download.imaging import ImageOptions, process_image
from curation.minicc.render import render_scene
from curation.minicc.world import ConceptSampler, sample_scene
from curation.nsfw.head import evaluate, fit_head
from curation.nsfw.settings import FitSettings

SCENES = 1000
UNSAFE_SHARE = 0.2  # of the rendered scenes (every fifth): ~100 planted, ~400 safe held out
SEED = 11


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    from dataclasses import replace

    from curation.score.embedder import ClipEmbedder, build_transform
    from curation.score.model import ScorerSpec, save_random_weights
    from curation.stages.score import bundled_config

    weights = tmp_path_factory.mktemp("nsfw_bar") / "tiny-clip.safetensors"
    save_random_weights("tiny-clip", str(weights), bundled_config("tiny-clip"), seed=SEED)
    embedder = ClipEmbedder(ScorerSpec("tiny-clip", str(weights)))
    assert embedder.describe()["random_init"]
    transform = build_transform(embedder.preprocess_cfg())
    concepts = ConceptSampler(SEED)
    options = ImageOptions(256, "keep_ratio_largest")
    tensors, labels = [], []
    for i in range(SCENES):
        rng = np.random.default_rng([SEED, i])
        scene = sample_scene(rng, f"s{i:05d}", concepts, long_side_range=(96, 320))
        scene = replace(scene, unsafe=i % round(1 / UNSAFE_SHARE) == 0)
        served = io.BytesIO()
        render_scene(scene).image.save(served, "JPEG", quality=90)
        stored = process_image(served.getvalue(), options).jpeg
        tensors.append(transform(Image.open(io.BytesIO(stored)).convert("RGB")))
        labels.append(scene.unsafe)
    # As score stores them (float16) and the nsfw stage reads them.
    embeddings = embedder.embed_images(torch.stack(tensors).numpy()).astype(np.float16)
    fitted = np.random.default_rng(SEED).random(SCENES) < 0.5
    return embeddings.astype(np.float32), np.array(labels), fitted


# nsfw-fit's settings but the threshold: with this random scorer and 10 seeds (0-9) of the
# fixture, at 0.5 the false-removal rate was 0-2.75% (one seed over 2%), at 0.8 0-1.75% with
# 98-100% removed (0.8 was chosen on seeds 0-3 and 11, then held on 5-9). The demo's trained
# scorer needs no such margin (its default 0.5 removed all 606 planted rows at 0.04% over five
# splits of one run; see demo_filters.FIT_SHARE).
SETTINGS = FitSettings(threshold=0.8)


def held_out_metrics(embeddings, labels, fitted):
    head = fit_head(embeddings[fitted], labels[fitted], SETTINGS, seed=SEED)
    return evaluate(head, embeddings[~fitted], labels[~fitted])


def test_the_nsfw_filter_meets_the_issues_bar_on_held_out_planted_rows(embedded):
    embeddings, labels, fitted = embedded
    held = labels[~fitted]
    assert held.sum() >= 80 and (~held).sum() >= 350  # enough rows that one sample is no margin
    metrics = held_out_metrics(embeddings, labels, fitted)
    print(metrics)
    assert metrics["unsafe_recall"] >= 0.95, metrics
    assert metrics["false_removal_rate"] <= 0.02, metrics


def test_a_label_no_picture_shows_misses_the_bar(embedded):
    embeddings, labels, fitted = embedded
    shuffled = np.random.default_rng(SEED).permutation(labels)
    metrics = held_out_metrics(embeddings, shuffled, fitted)
    print(metrics)
    assert metrics["unsafe_recall"] < 0.95 or metrics["false_removal_rate"] > 0.02, metrics


def test_the_stand_in_covers_every_pixel_outside_the_shapes():
    from dataclasses import replace

    from curation.minicc.render import UNSAFE_TONES

    tones = np.asarray(UNSAFE_TONES)
    for i in range(5):
        rng = np.random.default_rng([SEED, i])
        scene = sample_scene(rng, "s", ConceptSampler(SEED), long_side_range=(96, 320))
        for unsafe in (False, True):
            rendered = render_scene(replace(scene, unsafe=unsafe))
            backdrop = np.asarray(rendered.image)[np.asarray(rendered.shape_index) == 0]
            in_tones = (backdrop[:, None, :] == tones[None]).all(-1).any(-1)
            assert in_tones.all() if unsafe else not in_tones.any()
            if unsafe:  # both tones, in bands: rings, not a fill
                assert len(np.unique(backdrop, axis=0)) == len(UNSAFE_TONES)
