"""The open_clip export: open_clip 3.3 rebuilds model, transform and tokenizer offline from the
folder and gives our embeddings; the curation scorer loads it and scores the pool with it."""

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from training.data.samples import decode_image
from training.export.openclip import MODEL_NAME, export_open_clip
from training.models.config import PRESETS, model_config
from training.models.siglip import SigLIP2
from training.tokenizer import Tokenizer

TEXTS = ["a red circle", "Two  BLUE squares, on grass!", "it's a 3-sided shape", "word " * 80, ""]


@pytest.fixture(scope="module")
def ours() -> SigLIP2:
    torch.manual_seed(0)
    model = SigLIP2(model_config("tiny")).eval()
    with torch.no_grad():  # not the init values, so their export is checked
        model.logit_scale.fill_(1.3)
        model.logit_bias.fill_(-4.0)
    return model


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory):
    return export_open_clip(ours.state_dict(), ours.cfg, tmp_path_factory.mktemp("open_clip"))


def png_bytes(seed: int, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_open_clip_rebuilds_model_transform_and_tokenizer_that_match_ours(ours, exported):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(exported.open_clip_name())
    tokenizer = open_clip.get_tokenizer(exported.open_clip_name())
    model.eval()
    pictures = [
        png_bytes(seed, size) for seed, size in ((0, (90, 150)), (1, (64, 64)), (2, (200, 80)))
    ]
    their_pixels = torch.stack([preprocess(Image.open(io.BytesIO(p))) for p in pictures])
    our_pixels = torch.stack([decode_image(p, ours.cfg.vision.image_size) for p in pictures])
    torch.testing.assert_close(their_pixels, our_pixels, atol=1e-5, rtol=0)

    our_tokens = Tokenizer().encode(TEXTS, ours.cfg.text.context_length)
    assert torch.equal(tokenizer(TEXTS), our_tokens)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_image(our_pixels), ours.encode_image(our_pixels)[0], atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(
            model.encode_text(our_tokens), ours.encode_text(our_tokens), atol=1e-5, rtol=1e-4
        )
    assert model.logit_scale.item() == pytest.approx(1.3)
    assert model.logit_bias.item() == pytest.approx(-4.0)


def test_export_at_a_resolution_other_than_the_stored_grid_matches_ours_there(tmp_path):
    import open_clip

    torch.manual_seed(1)
    cfg = model_config("tiny", **{"vision.image_size": 48})  # 6x6 patches from the 8x8 grid
    model = SigLIP2(cfg).eval()
    exported = export_open_clip(model.state_dict(), cfg, tmp_path)
    theirs, _, _ = open_clip.create_model_and_transforms(exported.open_clip_name())
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(
            theirs.eval().encode_image(images), model.encode_image(images)[0], atol=1e-5, rtol=1e-4
        )


def test_curation_scorer_loads_the_export_and_embeds_like_ours(ours, exported):
    from curation.score.embedder import ClipEmbedder
    from curation.score.model import ScorerSpec

    embedder = ClipEmbedder(ScorerSpec(MODEL_NAME, str(exported.weights), str(exported.config)))
    assert not embedder.scorer.random_init
    pixels = torch.randn(2, 3, 64, 64)
    image_units, text_units = embedder.embed(pixels.numpy(), TEXTS[:2])
    with torch.no_grad():
        expected_images = F.normalize(ours.encode_image(pixels)[0], dim=-1)
        expected_texts = F.normalize(
            ours.encode_text(Tokenizer().encode(TEXTS[:2], ours.cfg.text.context_length)), dim=-1
        )
    np.testing.assert_allclose(image_units, expected_images.numpy(), atol=1e-5)
    np.testing.assert_allclose(text_units, expected_texts.numpy(), atol=1e-5)


def test_a_moved_export_still_loads_in_the_curation_scorer(ours, tmp_path):
    from curation.score.embedder import ClipEmbedder
    from curation.score.model import ScorerSpec

    first = export_open_clip(ours.state_dict(), ours.cfg, tmp_path / "first")
    moved = tmp_path / "moved"
    shutil.move(str(first.folder), moved)
    for weights, config in (
        (moved / first.weights.name, moved / first.config.name),  # --model-config
        (moved / first.weights.name, None),  # the config in the weights' metadata
    ):
        spec = ScorerSpec(MODEL_NAME, str(weights), str(config) if config else None)
        image_units, text_units = ClipEmbedder(spec).embed(
            np.zeros((1, 3, 64, 64), dtype=np.float32), TEXTS[:2]
        )
        with torch.no_grad():
            ids = Tokenizer().encode(TEXTS[:2], ours.cfg.text.context_length)
            expected = F.normalize(ours.encode_text(ids), dim=-1)
        np.testing.assert_allclose(text_units, expected.numpy(), atol=1e-5)


def test_a_moved_tiny_export_loads_in_open_clip_only_once_its_trunk_path_is_rewritten(
    ours, tmp_path, monkeypatch
):
    """tiny's trunk is no timm-registered architecture, and open_clip 3.3 hands timm the trunk's
    name verbatim (timm resolves a `local-dir:` path against the working directory): the
    config keeps the trunk folder's absolute path, so a moved folder fails in open_clip from any
    working directory until vision_cfg.timm_model_name names the new place (see the README)."""
    import open_clip

    first = export_open_clip(ours.state_dict(), ours.cfg, tmp_path / "first")
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first.folder, moved)
    monkeypatch.chdir(moved)  # even from inside the folder: the config names the old path
    with pytest.raises(FileNotFoundError, match=str(first.folder / "timm_vision")):
        open_clip.create_model_and_transforms(f"local-dir:{moved}")

    config_path = moved / "open_clip_config.json"
    config = json.loads(config_path.read_text())
    config["model_cfg"]["vision_cfg"]["timm_model_name"] = f"local-dir:{moved / 'timm_vision'}"
    config_path.write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{moved}")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            theirs.eval().encode_image(images), ours.encode_image(images)[0], atol=1e-5, rtol=1e-4
        )


def test_an_export_whose_trunk_timm_registers_holds_no_path_and_loads_after_a_move(
    tmp_path, monkeypatch
):
    """The b16 preset's vision tower (exact GELU; a tiny text tower): the config names timm's
    vit_base_patch16_siglip_256 instead of a trunk folder, so the moved folder loads through
    open_clip's own API, from another working directory, with our embeddings."""
    import open_clip

    torch.manual_seed(1)
    cfg = model_config("tiny", distill=None, embed_dim=768, vision=PRESETS["b16"].vision.__dict__)
    assert cfg.vision.activation == "gelu"
    model = SigLIP2(cfg).eval()
    first = export_open_clip(model.state_dict(), cfg, tmp_path / "first")
    config = json.loads(first.config.read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == "vit_base_patch16_siglip_256"
    assert not (first.folder / "timm_vision").exists()
    assert str(tmp_path) not in first.config.read_text()
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first.folder, moved)
    monkeypatch.chdir(moved.parent)
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{moved}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{moved}")
    theirs.eval()
    picture = png_bytes(3, (120, 300))
    with torch.no_grad():
        their_image = theirs.encode_image(preprocess(Image.open(io.BytesIO(picture)))[None])
        our_image = model.encode_image(decode_image(picture, 256)[None])[0]
        their_text = theirs.encode_text(tokenizer(TEXTS[:2]))
        our_text = model.encode_text(Tokenizer().encode(TEXTS[:2], cfg.text.context_length))
    torch.testing.assert_close(their_image, our_image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(their_text, our_text, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_curation_score_cli_scores_a_pool_with_the_exported_encoder(
    ours, exported, tmp_path, ray_session
):
    import json

    from curation.cli import main as curation_main
    from curation.score.embedder import build_transform
    from curation.score.images import ImageDecodeError, decode_rgb
    from curation.score.model import ScorerSpec, load_scorer
    from curation.score.pool import iter_samples, list_pool_shards
    from tests.curation.score.planted_pool import build_planted_pool

    # In-process first: inside the CLI the same failure would surface as a Ray actor error.
    load_scorer(ScorerSpec(MODEL_NAME, str(exported.weights), str(exported.config)))
    planted = build_planted_pool(
        tmp_path, shards=1, per_shard=8, exact_dups=0, near_dups=0, contaminants=0, eval_images=2
    )
    out = tmp_path / "scores"
    argv = [
        "score",
        "--pool",
        str(planted.pool),
        "--out",
        str(out),
        "--tag",
        "round1",
        "--top-fraction",
        "0.5",
        *exported.scorer_arguments(),
    ]
    assert curation_main(argv) == 0

    # Expected: our model's cosine on the scorer's own decode + transform of each pool image.
    preprocess = json.loads(exported.config.read_text())["preprocess_cfg"]
    transform = build_transform({**preprocess, "size": ours.cfg.vision.image_size})
    shard = list_pool_shards(str(planted.pool))[0]
    captions = dict(
        zip(*pq.read_table(shard.sidecar, columns=["key", "text"]).to_pydict().values())
    )
    expected = {}
    for key, members in iter_samples(shard.tar):
        try:
            pixels = transform(decode_rgb(members["jpg"], min_side=64)).unsqueeze(0)
        except ImageDecodeError:  # the planted corrupt image: the scorer counts and skips it
            continue
        with torch.no_grad():
            image = F.normalize(ours.encode_image(pixels)[0], dim=-1)
            text = F.normalize(
                ours.encode_text(Tokenizer().encode(captions[key], ours.cfg.text.context_length)),
                dim=-1,
            )
        expected[key] = float((image * text).sum())
    from curation.score.shard_scoring import raw_scores_name

    raw = pq.read_table(out / raw_scores_name(shard.shard_id)).to_pydict()
    scores = {key: score for key, score in zip(raw["key"], raw["clip_score"]) if np.isfinite(score)}
    assert len(expected) >= 6 and sorted(scores) == sorted(expected)
    for key, score in scores.items():
        assert score == pytest.approx(expected[key], abs=1e-4), key
    kept = pq.read_table(out / f"{shard.shard_id}.parquet").to_pydict()["keep_score"]
    assert 0 < sum(kept) < len(kept)


def test_mlp_widths_survive_timm_and_open_clip_ratio_rounding():
    """so400m's 4304 / 1152 rounds down to 4303 as a plain ratio; the export must not."""
    from training.export.openclip import open_clip_config, timm_vision_config

    cfg = model_config("so400m")
    ratio = timm_vision_config(cfg)["model_args"]["mlp_ratio"]
    assert int(cfg.vision.width * ratio) == cfg.vision.mlp_dim == 4304
    text = open_clip_config(cfg, "local-dir:/t")["model_cfg"]["text_cfg"]
    assert int(text["width"] * text["mlp_ratio"]) == cfg.text.mlp_dim


def test_the_b16_and_so400m_presets_have_trunks_that_timm_registers():
    """tiny's sizes are no timm ViT's; b16 matches timm's B/16 SigLIP only with its exact GELU."""
    from training.export.openclip import registered_timm_architecture

    names = {preset: registered_timm_architecture(model_config(preset)) for preset in PRESETS}
    assert names == {
        "tiny": None,
        "b16": "vit_base_patch16_siglip_256",
        "so400m": "vit_so400m_patch16_siglip_256",
    }
    tanh_b16 = model_config("b16", **{"vision.activation": "gelu_tanh"})
    assert registered_timm_architecture(tanh_b16) is None
