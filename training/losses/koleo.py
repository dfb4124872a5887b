"""KoLeo regulariser (DINOv2): spreads a batch of embeddings uniformly on the sphere by
maximising the log distance of each embedding to its nearest neighbour (Kozachenko–Leonenko
differential-entropy estimator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def koleo_loss(embeddings: Tensor, sample_mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """−mean_i log(min_{j≠i} ‖x_i − x_j‖ + eps) over L2-normalised embeddings [B, D] of this
    device's batch; rows with sample_mask False neither count nor serve as neighbours."""
    x = F.normalize(embeddings.float(), dim=-1)
    batch = x.shape[0]
    valid = (
        torch.ones(batch, dtype=torch.bool, device=x.device)
        if sample_mask is None
        else sample_mask.bool()
    )
    similarity = x @ x.T
    excluded = torch.eye(batch, dtype=torch.bool, device=x.device) | ~valid[None, :]
    # The nearest neighbour has the largest cosine similarity.
    nearest = similarity.masked_fill(excluded, -2.0).argmax(dim=1)
    distances = (x - x[nearest]).norm(dim=-1)
    rows = valid & (valid.sum() > 1)
    per_row = -torch.log(distances + eps)
    return (per_row * rows.float()).sum() / rows.float().sum().clamp(min=1.0)
