"""Fixed-resolution variants of a trained vision tower: a new patch size by pseudo-inverse resize
of the patch embedding (PI-resize, FlexiViT), and a new image size by resizing the position grid.

PI-resize: if resizing a p×p patch x to q×q is the linear map B·x, the new embedding weights Ŵ
solve Bᵀŵ = w in the least-squares sense, Ŵ = W·pinv(B). Then ⟨B·x, ŵ⟩ = ⟨x, w⟩ for every patch
when upsampling (q ≥ p), and as closely as possible when downsampling.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.siglip import SigLIP2
from training.models.vision import resize_position_grid


def patch_resize_matrix(old_patch: int, new_patch: int) -> Tensor:
    """[new², old²] matrix of bilinear (antialiased when shrinking) resizing of one channel of a
    patch, flattened row-major: the same resize `resize_patches` applies."""
    basis = torch.eye(old_patch * old_patch, dtype=torch.float64).reshape(
        -1, 1, old_patch, old_patch
    )
    resized = F.interpolate(
        basis,
        size=(new_patch, new_patch),
        mode="bilinear",
        align_corners=False,
        antialias=new_patch < old_patch,
    )
    return resized.reshape(old_patch * old_patch, new_patch * new_patch).T


def resize_patches(patches: Tensor, old_patch: int, new_patch: int, channels: int = 3) -> Tensor:
    """Resize flattened (row, col, channel) patches [..., old²·C] to [..., new²·C] patch by patch."""
    matrix = patch_resize_matrix(old_patch, new_patch).to(patches.dtype)
    shaped = patches.reshape(*patches.shape[:-1], old_patch * old_patch, channels)
    return torch.einsum("nm,...mc->...nc", matrix, shaped).reshape(*patches.shape[:-1], -1)


def pi_resize_patch_weight(
    weight: Tensor, old_patch: int, new_patch: int, channels: int = 3
) -> Tensor:
    """Patch-embedding weight [D, old²·C] (row, col, channel layout) → [D, new²·C]."""
    inverse = torch.linalg.pinv(patch_resize_matrix(old_patch, new_patch))  # [old², new²]
    width = weight.shape[0]
    per_channel = weight.double().reshape(width, old_patch * old_patch, channels)
    resized = torch.einsum("dmc,mn->dnc", per_channel, inverse)
    return resized.reshape(width, -1).to(weight.dtype)


@torch.no_grad()
def resize_vision(
    model: SigLIP2, patch_size: int | None = None, image_size: int | None = None
) -> SigLIP2:
    """Adapt `model` in place to a new patch size (PI-resize) and/or image size (the stored
    position grid is resized to the new patch grid); its config is updated to match."""
    vision_cfg = model.cfg.vision
    new_patch = patch_size or vision_cfg.patch_size
    new_image = image_size or vision_cfg.image_size
    if new_image % new_patch:
        raise ValueError(f"image size {new_image} is not a multiple of patch size {new_patch}")
    vision = model.vision
    if new_patch != vision_cfg.patch_size:
        old = vision.patch_embedding
        new = nn.Linear(new_patch * new_patch * vision_cfg.channels, old.out_features).to(
            old.weight
        )
        new.weight.copy_(
            pi_resize_patch_weight(
                old.weight, vision_cfg.patch_size, new_patch, vision_cfg.channels
            )
        )
        new.bias.copy_(old.bias)
        vision.patch_embedding = new
    grid = new_image // new_patch
    if grid != vision_cfg.pos_grid_size:
        vision.position_embedding = nn.Parameter(
            resize_position_grid(vision.position_embedding.data, grid, grid)
        )
    new_cfg = dataclasses.replace(
        vision_cfg, patch_size=new_patch, image_size=new_image, pos_grid_size=grid
    )
    vision.cfg = new_cfg
    model.cfg = dataclasses.replace(model.cfg, vision=new_cfg)
    return model
