import pytest
import torch
import torch.nn.functional as F

from training.models.config import model_config
from training.models.resize import pi_resize_patch_weight, resize_patches, resize_vision
from training.models.siglip import SigLIP2
from training.models.vision import patchify


def test_pi_resized_embedding_preserves_outputs_on_upsampled_patches():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 8 * 8 * 3, generator=generator, dtype=torch.float64)
    patches = torch.randn(10, 8 * 8 * 3, generator=generator, dtype=torch.float64)
    new_weight = pi_resize_patch_weight(weight, 8, 12)
    assert new_weight.shape == (6, 12 * 12 * 3)
    torch.testing.assert_close(resize_patches(patches, 8, 12) @ new_weight.T, patches @ weight.T)


def test_pi_resize_beats_resizing_the_weights_directly_when_shrinking():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 16 * 16 * 3, generator=generator, dtype=torch.float64)
    # Smooth patches: what natural images mostly are at patch scale.
    coarse = torch.randn(32, 3, 4, 4, generator=generator, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    patches = smooth.permute(0, 2, 3, 1).reshape(32, -1)
    reference = patches @ weight.T
    small = resize_patches(patches, 16, 8)
    pi_error = (small @ pi_resize_patch_weight(weight, 16, 8).T - reference).norm()
    naive = F.interpolate(
        weight.reshape(6, 16, 16, 3).permute(0, 3, 1, 2),
        size=(8, 8),
        mode="bilinear",
        antialias=True,
    )
    naive_error = (small @ naive.permute(0, 2, 3, 1).reshape(6, -1).T - reference).norm()
    assert pi_error < 0.5 * naive_error


def test_resized_model_on_upsampled_image_matches_the_original_model():
    torch.manual_seed(2)
    model = SigLIP2(model_config("tiny")).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled, tokens = model.encode_image(image)
        patches, coords = patchify(image, 8)
        big_patches = resize_patches(patches, 8, 16)
        resize_vision(model, patch_size=16, image_size=128)
        assert model.cfg.vision.patch_size == 16 and model.vision.cfg.pos_grid_size == 8
        new_pooled, new_tokens = model.encode_image(patches=big_patches, patch_coords=coords)
    torch.testing.assert_close(new_pooled, pooled, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(new_tokens, tokens, rtol=1e-4, atol=1e-4)


def test_new_image_size_resizes_the_stored_position_grid():
    model = SigLIP2(model_config("tiny"))
    resize_vision(model, image_size=96)
    assert model.vision.position_embedding.shape[:2] == (12, 12)
    assert model.cfg.vision.image_size == 96
    with pytest.raises(ValueError, match="multiple"):
        resize_vision(model, image_size=100)
