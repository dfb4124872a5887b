import json
import math

import pytest
import torch
import torch.nn.functional as F

from training.models.config import PRESETS, ModelConfig, model_config
from training.models.siglip import SigLIP2
from training.models.vision import grid_coords, patchify, resize_position_grid


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SigLIP2(model_config("tiny")).eval()


def test_model_config_round_trips_through_json_and_applies_overrides():
    cfg = model_config("tiny", **{"vision.depth": 3}, text={"heads": 2})
    restored = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    assert restored.vision.depth == 3 and restored.text.heads == 2
    with pytest.raises(ValueError, match="unknown field"):
        model_config("tiny", **{"vision.depht": 3})
    with pytest.raises(ValueError, match="unknown model preset"):
        model_config("huge")
    with pytest.raises(ValueError, match="embed_dim"):
        model_config("tiny", embed_dim=32)


@pytest.mark.parametrize("preset,low,high", [("b16", 85e6, 96e6), ("so400m", 395e6, 435e6)])
def test_presets_have_the_published_vision_tower_size(preset, low, high):
    with torch.device("meta"):
        model = SigLIP2(PRESETS[preset])
    vision_params = (
        sum(p.numel() for p in model.vision.parameters()) - model.vision.mask_token.numel()
    )
    assert low < vision_params < high


def test_linear_patch_embedding_on_patchified_input_equals_a_strided_convolution():
    torch.manual_seed(1)
    patch, channels, width = 4, 3, 6
    images = torch.randn(2, channels, 8, 12)
    linear = torch.nn.Linear(patch * patch * channels, width)
    patches, coords = patchify(images, patch)
    # Patches are flattened as (row, col, channel): permute a conv kernel to that layout.
    conv_weight = linear.weight.view(width, patch, patch, channels).permute(0, 3, 1, 2)
    conv = F.conv2d(images, conv_weight, linear.bias, stride=patch)
    torch.testing.assert_close(linear(patches), conv.flatten(2).transpose(1, 2))
    assert (
        coords[0].tolist()
        == grid_coords(2, 3).tolist()
        == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    )


def test_position_grid_resize_is_identity_at_its_own_size_and_bilinear_otherwise():
    grid = torch.randn(8, 8, 5)
    assert resize_position_grid(grid, 8, 8) is grid
    constant = torch.full((8, 8, 2), 3.0)
    torch.testing.assert_close(resize_position_grid(constant, 3, 13), torch.full((3, 13, 2), 3.0))
    # Antialiased 2× downsizing of a checkerboard averages it instead of sampling one colour.
    checkerboard = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()[..., None]
    small = resize_position_grid(checkerboard, 4, 4)
    assert small.std() < 0.1 and abs(small.mean().item() - 0.5) < 0.05


def test_smaller_image_reads_the_position_grid_resized_to_its_patch_grid(tiny_model):
    vision = tiny_model.vision
    _patches, coords = patchify(torch.randn(1, 3, 32, 48), vision.cfg.patch_size)
    embeddings = vision.position_embeddings(coords, torch.ones(coords.shape[:2], dtype=torch.bool))
    expected = resize_position_grid(vision.position_embedding, 4, 6).reshape(1, 24, -1)
    torch.testing.assert_close(embeddings, expected)


@pytest.mark.parametrize("pool", ["map", "avg"])
def test_padded_naflex_batch_gives_each_image_the_same_outputs_as_alone(tiny_model, pool):
    if pool != "map":
        torch.manual_seed(0)
        tiny_model = SigLIP2(model_config("tiny", vision={"pool": pool})).eval()
    torch.manual_seed(2)
    shapes = [(3, 16, 40), (3, 32, 24), (3, 8, 8)]  # 2x5, 4x3 and 1x1 patch grids of 8 px
    images = [torch.randn(1, *shape) for shape in shapes]
    singles = [tiny_model.encode_image(image) for image in images]
    pieces = [patchify(image, 8) for image in images]
    length = max(p.shape[1] for p, _ in pieces) + 3
    patches = torch.zeros(len(images), length, 8 * 8 * 3)
    coords = torch.zeros(len(images), length, 2, dtype=torch.long)
    mask = torch.zeros(len(images), length, dtype=torch.bool)
    for row, (image_patches, image_coords) in enumerate(pieces):
        count = image_patches.shape[1]
        patches[row, :count] = image_patches[0]
        # Padding holds garbage on purpose: it must not leak into real outputs.
        patches[row, count:] = 100.0
        coords[row, :count] = image_coords[0]
        mask[row, :count] = True
    pooled, tokens = tiny_model.encode_image(patches=patches, patch_coords=coords, patch_mask=mask)
    for row, (single_pooled, single_tokens) in enumerate(singles):
        count = single_tokens.shape[1]
        torch.testing.assert_close(pooled[row], single_pooled[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(tokens[row, :count], single_tokens[0], rtol=1e-4, atol=1e-5)


def test_average_pooling_is_the_mean_of_the_final_tokens_and_has_no_head():
    torch.manual_seed(0)
    model = SigLIP2(model_config("tiny", vision={"pool": "avg"})).eval()
    assert model.vision.head is None
    assert not any(name.startswith("vision.head.") for name in model.state_dict())
    pooled, tokens = model.encode_image(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(pooled, tokens.mean(dim=1))
    with pytest.raises(ValueError, match="vision.pool must be one of"):
        model_config("tiny", vision={"pool": "cls"})


def test_masked_patches_hide_their_pixels_behind_the_mask_token(tiny_model):
    torch.manual_seed(3)
    image = torch.randn(1, 3, 64, 64)
    token_mask = torch.zeros(1, 64, dtype=torch.bool)
    token_mask[0, :32] = True  # the top half of the 8x8 patch grid
    altered = image.clone()
    altered[:, :, :32] = torch.randn(1, 3, 32, 64)
    masked = tiny_model.encode_image(image, token_mask=token_mask)
    masked_altered = tiny_model.encode_image(altered, token_mask=token_mask)
    torch.testing.assert_close(masked[0], masked_altered[0])
    unmasked = tiny_model.encode_image(image)
    unmasked_altered = tiny_model.encode_image(altered)
    assert not torch.allclose(unmasked[0], unmasked_altered[0])
    none_masked = tiny_model.encode_image(image, token_mask=torch.zeros_like(token_mask))
    torch.testing.assert_close(none_masked[0], unmasked[0])


def test_text_embedding_is_pooled_at_the_last_position(tiny_model):
    tokens = torch.randint(0, 1000, (2, tiny_model.cfg.text.context_length))
    changed_first = tokens.clone()
    changed_first[:, 0] = (tokens[:, 0] + 1) % 1000
    base = tiny_model.encode_text(tokens)
    assert base.shape == (2, tiny_model.cfg.embed_dim)
    # Bidirectional attention: the last position sees every token, so any change reaches it.
    assert not torch.allclose(base, tiny_model.encode_text(changed_first))


def test_temperature_and_bias_start_at_siglip_values(tiny_model):
    assert tiny_model.logit_scale.exp().item() == pytest.approx(10.0)
    # tiny trains with 24 contrastive samples a batch: b starts at that batch's prior instead.
    assert tiny_model.logit_bias.item() == -3.0
    for preset in ("b16", "so400m"):
        cfg = model_config(preset)
        assert (
            math.exp(cfg.init_logit_scale) == pytest.approx(10.0) and cfg.init_logit_bias == -10.0
        )


def test_encode_image_rejects_ambiguous_or_incomplete_inputs(tiny_model):
    with pytest.raises(ValueError, match="either"):
        tiny_model.encode_image(torch.zeros(1, 3, 64, 64), patches=torch.zeros(1, 64, 192))
    with pytest.raises(ValueError, match="patch_coords"):
        tiny_model.encode_image(patches=torch.zeros(1, 64, 192))
    with pytest.raises(ValueError, match="multiple of patch size"):
        tiny_model.encode_image(torch.zeros(1, 3, 60, 64))
