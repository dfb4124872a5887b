"""Phase-2 self-distillation heads (SILC on pooled embeddings, TIPS on patch tokens) with their
teacher centers, and the EMA teacher that produces the targets."""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.distributed import is_dtensor
from training.losses.distillation import TeacherCenter
from training.models.config import DistillConfig


class DINOHead(nn.Module):
    """MLP → L2-normalised bottleneck → weight-normalised linear onto `prototypes` logits."""

    def __init__(
        self,
        in_dim: int,
        prototypes: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        layers: int = 3,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"a DINO head needs at least one layer, got {layers}")
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        blocks: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
            blocks.append(nn.Linear(fan_in, fan_out))
            if index < layers - 1:
                blocks.append(nn.GELU())
        self.mlp = nn.Sequential(*blocks)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # Prototype directions; each is used at unit norm, so only the direction is learned (DINO's
        # weight-normalised last layer with its norm fixed to 1, without a parametrization that
        # sharding wrappers would have to understand).
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


class DistillHeads(nn.Module):
    def __init__(self, cfg: DistillConfig, embed_dim: int, patch_dim: int) -> None:
        super().__init__()
        self.silc = DINOHead(
            embed_dim, cfg.prototypes, cfg.hidden_dim, cfg.bottleneck_dim, cfg.layers
        )
        self.tips = DINOHead(
            patch_dim, cfg.patch_prototypes, cfg.hidden_dim, cfg.bottleneck_dim, cfg.layers
        )
        self.silc_center = TeacherCenter(cfg.prototypes, cfg.center_momentum)
        self.tips_center = TeacherCenter(cfg.patch_prototypes, cfg.center_momentum)


def make_ema_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of the student (parameters and buffers) to be moved by ema_update."""
    teacher = copy.deepcopy(student)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher.eval()


def local_parameters(module: nn.Module) -> list[Tensor]:
    """The module's parameters as the tensors this rank holds: the local shard of an FSDP2
    (DTensor) parameter, a view that updates it in place, or the parameter itself."""
    return [p.to_local() if is_dtensor(p) else p for p in module.parameters()]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← momentum · teacher + (1 − momentum) · student, parameter by parameter. Under
    FSDP2 both are sharded alike, so each rank moves its own shards (torch refuses one foreach
    call over FSDP2's DTensor shards and the replicated 0-d t and b together)."""
    teacher_params = local_parameters(teacher)
    student_params = [p.detach() for p in local_parameters(student)]
    if len(teacher_params) != len(student_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
