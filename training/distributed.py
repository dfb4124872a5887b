"""Process groups and model wrapping, from one CPU process to many GPUs under torchrun.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process and
nothing is initialised. The backend follows the device: NCCL on GPUs, gloo on CPUs. Models are
wrapped with DDP (replicated weights, all-reduced gradients) or FSDP2 (`fully_shard` on every
transformer block, then on the root, so each block's weights are gathered only while it runs).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(timeout_s: int = 600) -> DistEnv:
    """Read the torchrun environment, pick the device and start the process group if needed."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return DistEnv(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of every tower: the children of each nn.ModuleList in the model."""
    return [block for module in model.modules() if isinstance(module, nn.ModuleList)
            for block in module]


def parallelize(model: nn.Module, env: DistEnv, parallelism: str,
                param_dtype: torch.dtype | None = None) -> nn.Module:
    """Wrap for data parallelism; a single process gets the model back unchanged.

    With FSDP2 and `param_dtype=torch.bfloat16`, gathered weights and gradient reductions run in
    bf16 while the sharded master weights and the optimizer stay fp32.
    """
    if not env.is_distributed:
        return model
    if parallelism == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if parallelism == "fsdp":
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for block in transformer_blocks(model):
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    raise ValueError(f"unknown parallelism {parallelism!r}: ddp or fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under a DDP wrapper (FSDP2 shards in place and needs no unwrapping)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean_across_ranks(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average logged scalars over ranks (one all-reduce for all of them)."""
    if not env.is_distributed or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(packed)
    return dict(zip(keys, (packed / env.world_size).tolist()))
