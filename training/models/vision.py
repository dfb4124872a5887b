"""SigLIP 2 vision tower: linear patch embedding on patchified input, a learned position grid
resized per image, a pre-LN ViT with padding masks, and a MAP pooling head.

Square images and NaFlex batches take the same path: a square image is patchified into
`patches [B, N, p*p*C]` with `patch_coords [B, N, 2]` (row, col) and an all-true `patch_mask`, so
what a test proves for one holds for the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.blocks import EncoderBlock, MAPHead, key_padding_to_attn_mask
from training.models.config import VisionConfig


def patchify(images: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
    """[B, C, H, W] → patches [B, N, p*p*C] in row-major patch order, each patch flattened as
    (row-in-patch, col-in-patch, channel), and coords [B, N, 2] of (patch row, patch col)."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of patch size {patch_size}"
        )
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(
        batch, rows * cols, patch_size * patch_size * channels
    )
    coords = grid_coords(rows, cols, images.device).unsqueeze(0).expand(batch, -1, -1)
    return patches, coords


def grid_coords(rows: int, cols: int, device: torch.device | None = None) -> Tensor:
    """[(rows*cols), 2] (row, col) coordinates in row-major order."""
    row_idx = torch.arange(rows, device=device).repeat_interleave(cols)
    col_idx = torch.arange(cols, device=device).repeat(rows)
    return torch.stack([row_idx, col_idx], dim=-1)


def resize_position_grid(grid: Tensor, rows: int, cols: int) -> Tensor:
    """[G, G, D] learned grid → [rows, cols, D]; bilinear with antialias so downsizing averages
    rather than aliases. Same size returns the grid unchanged."""
    if grid.shape[0] == rows and grid.shape[1] == cols:
        return grid
    resized = F.interpolate(
        grid.permute(2, 0, 1).unsqueeze(0).float(),
        size=(rows, cols),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return resized[0].permute(1, 2, 0).to(grid.dtype)


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Linear(cfg.patch_dim, cfg.width)
        self.position_embedding = nn.Parameter(
            torch.empty(cfg.pos_grid_size, cfg.pos_grid_size, cfg.width)
        )
        nn.init.normal_(self.position_embedding, std=cfg.width**-0.5)
        # Replaces the embedding of masked patches for TIPS masked-patch prediction (phase 2).
        self.mask_token = nn.Parameter(torch.zeros(cfg.width))
        self.layers = nn.ModuleList(
            EncoderBlock(cfg.width, cfg.heads, cfg.mlp_dim, cfg.layer_norm_eps, cfg.activation)
            for _ in range(cfg.depth)
        )
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.head = (
            MAPHead(cfg.width, cfg.heads, cfg.mlp_dim, cfg.layer_norm_eps, cfg.activation)
            if cfg.pool == "map"
            else None
        )

    def position_embeddings(self, patch_coords: Tensor, patch_mask: Tensor) -> Tensor:
        """[B, N, D] position embeddings: each image's grid is resized to its own patch grid
        (rows, cols = 1 + max real coordinate) and read at its patches' coordinates."""
        coords = patch_coords.long()
        masked_coords = torch.where(patch_mask.unsqueeze(-1), coords, torch.zeros_like(coords))
        grid_sizes = masked_coords.amax(dim=1) + 1  # [B, 2]
        out = torch.zeros(
            *coords.shape[:2],
            self.cfg.width,
            dtype=self.position_embedding.dtype,
            device=coords.device,
        )
        # One resize per distinct grid size: a square batch resizes once.
        unique_sizes, inverse = torch.unique(grid_sizes, dim=0, return_inverse=True)
        for size_index, (rows, cols) in enumerate(unique_sizes.tolist()):
            members = (inverse == size_index).nonzero(as_tuple=True)[0]
            grid = resize_position_grid(self.position_embedding, rows, cols)
            member_coords = masked_coords[members]
            out[members] = grid[member_coords[..., 0], member_coords[..., 1]]
        return out

    def forward(
        self,
        patches: Tensor,
        patch_coords: Tensor | None = None,
        patch_mask: Tensor | None = None,
        token_mask: Tensor | None = None,
        grid_size: tuple[int, int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (pooled [B, D], patch tokens [B, N, D] after the final LayerNorm).

        Positions come from `patch_coords` [B, N, 2] (NaFlex: per-image grids, any order) or,
        for a batch of same-size unpadded images in row-major order, from `grid_size`
        (rows, cols): one resized grid broadcast over the batch, no gather.
        patch_mask: True for real patches (padding is False), None when nothing is padded.
        token_mask: True for patches whose embedding is replaced by the learned mask token."""
        if patches.shape[-1] != self.cfg.patch_dim:
            raise ValueError(
                f"patch dim {patches.shape[-1]} != {self.cfg.patch_dim} (patch size {self.cfg.patch_size})"
            )
        x = self.patch_embedding(patches.to(self.patch_embedding.weight.dtype))
        if token_mask is not None:
            x = torch.where(token_mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        if patch_coords is not None:
            real = (
                patch_mask
                if patch_mask is not None
                else torch.ones_like(patch_coords[..., 0], dtype=torch.bool)
            )
            position = self.position_embeddings(patch_coords, real)
        elif (
            grid_size is not None
            and patch_mask is None
            and grid_size[0] * grid_size[1] == patches.shape[1]
        ):
            position = resize_position_grid(self.position_embedding, *grid_size).reshape(
                1, patches.shape[1], -1
            )
        else:
            raise ValueError(
                "give patch_coords, or grid_size (rows, cols) matching unpadded patches"
            )
        x = x + position.to(x.dtype)
        # No padding: no attention mask, so SDPA can pick its fused kernels.
        attn_mask = key_padding_to_attn_mask(patch_mask)
        for layer in self.layers:
            x = layer(x, attn_mask)
        tokens = self.post_layernorm(x)
        if self.head is not None:
            return self.head(tokens, patch_mask), tokens
        if patch_mask is None:
            return tokens.mean(dim=1), tokens
        weights = patch_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1), tokens
