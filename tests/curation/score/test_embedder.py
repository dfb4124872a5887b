"""The scorer's input: uint8 batches normalised where the model runs equal the eval transform."""

import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from open_clip.transform import PreprocessCfg
from PIL import Image
from torchvision.transforms import Compose

from curation.score.embedder import (
    ShortestSideCrop,
    build_image_geometry,
    build_transform,
    normalise_batch,
)


@pytest.mark.parametrize(
    "overrides",
    [{"size": 224}, {"size": 64, "resize_mode": "squash"}, {"size": 96, "resize_mode": "longest"}],
)
def test_geometry_then_batch_normalisation_equals_the_per_image_transform(overrides):
    cfg = {**asdict(PreprocessCfg()), **overrides}
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in ((300, 500), (640, 200), (224, 224), (31, 47))
    ]
    expected = torch.stack([build_transform(cfg)(image) for image in images])
    geometry = build_image_geometry(cfg)
    batch = np.stack([np.asarray(geometry(image)) for image in images])
    assert batch.dtype == np.uint8 and batch.shape[-1] == 3
    got = normalise_batch(torch.from_numpy(batch), cfg["mean"], cfg["std"])
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    ("size", "interpolation"), [(224, "bicubic"), (64, "bilinear"), (97, "bicubic")]
)
def test_pillow_geometry_equals_open_clips_shortest_side_transform(size, interpolation):
    cfg = {**asdict(PreprocessCfg()), "size": size, "interpolation": interpolation}
    geometry = build_image_geometry(cfg)
    assert isinstance(geometry, ShortestSideCrop)
    reference = Compose(build_transform(cfg).transforms[:3])  # Resize, CenterCrop, mode
    assert [type(t).__name__ for t in reference.transforms][:2] == ["Resize", "CenterCrop"]
    rng = np.random.default_rng(size)
    sides = [(size, size), (size + 1, size), (size, size + 3), (7, 5), (1, 900), (900, 1)]
    sides += [tuple(int(v) for v in rng.integers(1, 1500, 2)) for _ in range(60)]
    for width, height in sides:
        for mode in ("RGB", "L", "RGBA"):
            channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
            pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
            image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
            ours, theirs = geometry(image), reference(image)
            assert ours.mode == theirs.mode == "RGB" and ours.size == theirs.size == (size, size)
            assert np.array_equal(np.asarray(ours), np.asarray(theirs)), (width, height, mode)


def test_a_decoding_process_never_imports_torch():
    # The score stage's shard tasks only decode, resize and crop: with open_clip's default
    # preprocessing they must not load torch, torchvision or open_clip (~6 s, ~700 MB each).
    cfg = {**asdict(PreprocessCfg()), "size": 64}
    script = f"""
import io, json, sys
import numpy as np
from PIL import Image
from curation.score.embedder import build_image_geometry
from curation.score.images import decode_rgb, pixel_signature
buffer = io.BytesIO()
Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(buffer, "JPEG")
image = decode_rgb(buffer.getvalue(), min_side=64)
pixel_signature(image)
geometry = build_image_geometry(json.loads({json.dumps(json.dumps(cfg))}))
assert np.asarray(geometry(image)).shape == (64, 64, 3)
loaded = [name for name in ("torch", "torchvision", "open_clip") if name in sys.modules]
print(json.dumps(loaded))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def tiny_clip(**text_cfg):
    from open_clip.model import CLIP

    torch.manual_seed(0)
    vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
    text = {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
    return CLIP(16, vision, {**text, **text_cfg}).eval()


def tokens_of(lengths, context=24, eot=49407):
    """Rows of random word ids, each ended by the end-of-text id after `length` words."""
    rng = np.random.default_rng(len(lengths))
    rows = np.zeros((len(lengths), context), np.int64)
    for row, length in zip(rows, lengths):
        row[: length + 1] = [49406, *rng.integers(1, 49000, length - 1), eot][:context]
    return torch.from_numpy(rows)


@pytest.mark.parametrize("text_cfg", [{}, {"pool_type": "eos", "eos_id": 49407}])
def test_text_embeddings_from_the_positions_before_the_last_end_of_text_equal_the_full_tower(
    text_cfg,
):
    from curation.score.embedder import encode_text, pooled_positions

    model = tiny_clip(**text_cfg)
    tokens = tokens_of([3, 9, 5, 2])  # the longest row's end-of-text token sits at position 9
    assert pooled_positions(model, tokens) == 10
    with torch.inference_mode():
        full = model.encode_text(tokens, normalize=True)
        trimmed = encode_text(model, tokens)
    assert trimmed.shape == full.shape
    torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=1e-5)
    # The trimming is what runs: a change after the pooled positions leaves the embedding alone
    # and a change before it does not.
    later, earlier = tokens.clone(), tokens.clone()
    later[:, 12], earlier[0, 1] = 77, 77
    with torch.inference_mode():
        assert torch.equal(encode_text(model, later), trimmed)
        assert not torch.allclose(encode_text(model, earlier), trimmed)


@pytest.mark.parametrize(
    ("text_cfg", "lengths"),
    [
        ({"no_causal_mask": True, "pool_type": "last"}, [3, 4]),  # every position is read
        ({"no_causal_mask": True, "pool_type": "argmax"}, [3, 4]),  # bidirectional: pads count
        ({}, [3, 23]),  # a caption that fills the context leaves nothing to cut
    ],
)
def test_towers_whose_output_reads_every_position_run_whole(text_cfg, lengths):
    from curation.score.embedder import encode_text, pooled_positions

    model = tiny_clip(**text_cfg)
    tokens = tokens_of(lengths)
    assert pooled_positions(model, tokens) is None
    with torch.inference_mode():
        assert torch.equal(encode_text(model, tokens), model.encode_text(tokens, normalize=True))


def test_a_scoring_actor_skips_only_the_optional_backends_its_scorers_do_not_use(tmp_path):
    # In a fresh process (an actor's), as the actor calls it: a built-in-tower CLIP needs
    # neither timm nor transformers; a config naming a timm trunk keeps both importable.
    from planted_pool import tiny_model_config

    from curation.score.model import save_random_weights

    plain = tmp_path / "plain.safetensors"
    save_random_weights("tiny-clip", str(plain), str(tiny_model_config()))
    timm_config = tmp_path / "timm.json"
    config = json.loads(tiny_model_config().read_text())
    config["vision_cfg"] = {"timm_model_name": "vit_tiny_patch16_224", "image_size": 64}
    timm_config.write_text(json.dumps(config))
    script = """
import json, sys
from curation.score.embedder import ClipEmbedder
from curation.score.model import ScorerSpec, skip_unused_backends
spec = ScorerSpec("tiny-clip", sys.argv[1], sys.argv[2] or None)
if sys.argv[2]:
    print(json.dumps(skip_unused_backends((spec,))))
else:
    embedder = ClipEmbedder(spec, threads=1, own_process=True)
    image, text = embedder.embed(__import__("numpy").zeros((1, 64, 64, 3), "uint8"), ["a cat"])
    assert image.shape == text.shape == (1, 64)
    failed = []
    for name in ("timm", "transformers"):
        try:
            __import__(name)
        except ImportError:
            failed.append(name)
    print(json.dumps(failed))
"""
    for config_path, expected in ((None, ["timm", "transformers"]), (timm_config, [])):
        result = subprocess.run(
            [sys.executable, "-c", script, str(plain), str(config_path or "")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
