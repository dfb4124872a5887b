import pytest
import torch
import torch.nn.functional as F
import transformers

from training.models.config import model_config
from training.models.hf_siglip2 import (
    hf_config_kwargs,
    model_config_from_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)
from training.models.siglip import SigLIP2
from training.models.vision import patchify

LOCAL_ONLY = ("decoder.", "distill_heads.", "vision.mask_token")


def naflex_batch(patch_size):
    """Two images with different patch grids (3x5 and 4x4) padded to one sequence length."""
    torch.manual_seed(0)
    images = [
        torch.randn(1, 3, 3 * patch_size, 5 * patch_size),
        torch.randn(1, 3, 4 * patch_size, 4 * patch_size),
    ]
    pieces = [patchify(image, patch_size) for image in images]
    length = 18
    patches = torch.zeros(2, length, patch_size * patch_size * 3)
    coords = torch.zeros(2, length, 2, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.bool)
    for row, (image_patches, image_coords) in enumerate(pieces):
        count = image_patches.shape[1]
        patches[row, :count], coords[row, :count], mask[row, :count] = (
            image_patches[0],
            image_coords[0],
            True,
        )
    spatial_shapes = torch.tensor([[3, 5], [4, 4]])
    return patches, coords, mask, spatial_shapes


def features(output):
    """transformers 5 returns model outputs from get_*_features; 4.x returned tensors."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def assert_same_outputs(ours: SigLIP2, hf_model) -> None:
    patch_size = ours.cfg.vision.patch_size
    patches, coords, mask, spatial_shapes = naflex_batch(patch_size)
    tokens = torch.randint(0, ours.cfg.text.vocab_size, (2, ours.cfg.text.context_length))
    with torch.no_grad():
        pooled, patch_tokens = ours.encode_image(
            patches=patches, patch_coords=coords, patch_mask=mask
        )
        hf_vision = hf_model.vision_model(
            pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=spatial_shapes
        )
        text = ours.encode_text(tokens)
        hf_text = features(hf_model.get_text_features(input_ids=tokens))
        hf_logits = hf_model(
            input_ids=tokens,
            pixel_values=patches,
            pixel_attention_mask=mask,
            spatial_shapes=spatial_shapes,
        ).logits_per_image
    torch.testing.assert_close(pooled, hf_vision.pooler_output, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        patch_tokens[mask], hf_vision.last_hidden_state[mask], rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(text, hf_text, rtol=1e-4, atol=1e-5)
    image_unit = torch.nn.functional.normalize(pooled, dim=-1)
    text_unit = torch.nn.functional.normalize(text, dim=-1)
    logits = ours.logit_scale.exp() * image_unit @ text_unit.T + ours.logit_bias
    torch.testing.assert_close(logits, hf_logits, rtol=1e-4, atol=1e-4)


def test_hf_siglip2_weights_load_and_give_the_same_outputs():
    hf_config = transformers.Siglip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "patch_size": 4,
            "num_patches": 16,
        },
        text_config={
            "vocab_size": 100,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 16,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
        },
    )
    torch.manual_seed(1)
    hf_model = transformers.Siglip2Model(hf_config).eval()
    with torch.no_grad():  # non-default t and b so their conversion is checked
        hf_model.logit_scale.fill_(1.7)
        hf_model.logit_bias.fill_(-3.0)
    ours = SigLIP2(model_config_from_hf(hf_config, decoder_depth=1)).eval()
    result = ours.load_state_dict(state_dict_from_hf(hf_model.state_dict()), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(key.startswith(LOCAL_ONLY) for key in result.missing_keys)
    assert_same_outputs(ours, hf_model)


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_exported_towers_load_strictly_into_hf_siglip2(activation):
    torch.manual_seed(2)
    sizes = {"text.vocab_size": 120, "text.context_length": 16, "vision.pos_grid_size": 4}
    cfg = model_config("tiny", **sizes, **{"vision.activation": activation})
    ours = SigLIP2(cfg).eval()
    hf_config = transformers.Siglip2Config(**hf_config_kwargs(cfg))
    assert model_config_from_hf(hf_config).vision.activation == activation
    hf_model = transformers.Siglip2Model(hf_config).eval()
    hf_model.load_state_dict(state_dict_to_hf(ours.state_dict()), strict=True)
    assert_same_outputs(ours, hf_model)
    # The two GELUs differ by less than the tolerance above: compare the activations themselves.
    probe = torch.linspace(-4, 4, 801)
    ours_mlps = (ours.vision.layers[0].mlp, ours.vision.head.mlp)
    hf_mlps = (hf_model.vision_model.encoder.layers[0].mlp, hf_model.vision_model.head.mlp)
    for mine, theirs in zip(ours_mlps, hf_mlps, strict=True):
        expected = F.gelu(probe, approximate=mine.approximate)
        torch.testing.assert_close(theirs.activation_fn(probe), expected, rtol=0, atol=1e-6)
    other = "none" if activation == "gelu_tanh" else "tanh"
    assert (F.gelu(probe, approximate=other) - expected).abs().max() > 1e-4
    round_trip = state_dict_from_hf(state_dict_to_hf(ours.state_dict()))
    for key, value in round_trip.items():
        assert torch.equal(value, ours.state_dict()[key]), key
