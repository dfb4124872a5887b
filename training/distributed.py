"""Process groups and model wrapping, from one CPU process to many GPUs under torchrun.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process and
nothing is initialised. The backend follows the device: NCCL on GPUs, gloo on CPUs. Models are
wrapped with DDP (replicated weights, all-reduced gradients) or FSDP2 (`fully_shard` on every
transformer block, then on the root, so each block's weights are gathered only while it runs).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.models.blocks import RepeatedBlock


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
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
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


def set_cpu_threads(env: DistEnv, loader_workers: int) -> int:
    """On CPU, give torch only the cores nobody else in the run needs: this process's cores split
    over the local ranks, less one per data-loader worker. Oversubscribed OpenMP threads spin
    waiting for a thread the OS has parked: on 2 cores with one loader worker, a tiny step took
    3.4 s with 2 threads against 0.1 s with 1. OMP_NUM_THREADS, when set, wins. Returns the
    thread count."""
    if env.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0))
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, cores // local_ranks - loader_workers))
    return torch.get_num_threads()


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of every tower: the children of each nn.ModuleList in the model."""
    return [
        block for module in model.modules() if isinstance(module, nn.ModuleList) for block in module
    ]


def set_block_options(model: nn.Module, compile: bool, activation_checkpointing: bool) -> None:
    """Per transformer block, before wrapping (FSDP2 then shards the compiled, checkpointed
    blocks): activation checkpointing (see RepeatedBlock) and torch.compile of the block in place
    (parameter names unchanged, so checkpoints and exports do not see it). Compiling blocks
    rather than the model keeps graphs small and shared by same-shape blocks; a copy of the
    model (deepcopy, e.g. the EMA teacher) comes out uncompiled."""
    for block in transformer_blocks(model):
        if isinstance(block, RepeatedBlock):
            block.activation_checkpointing = activation_checkpointing
        if compile:
            block.compile()


def parallelize(
    model: nn.Module, env: DistEnv, parallelism: str, param_dtype: torch.dtype | None = None
) -> nn.Module:
    """Wrap for data parallelism; a single process gets the model back unchanged.

    With FSDP2 and `param_dtype=torch.bfloat16`, gathered weights and gradient reductions run in
    bf16 while the sharded master weights and the optimizer stay fp32.
    """
    if not env.is_distributed:
        return model
    if parallelism == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        # Phase-2 parameters (e.g. the TIPS mask token) exist from step 0 but get no gradient in
        # phase 1. A static graph lets DDP learn the used set in the first step. (The other
        # option, find_unused_parameters, breaks here: the model returns the t and b parameters
        # themselves as outputs, which its graph search counts as unused.) A phase change
        # alters the graph, so the trainer must re-wrap the model at a phase boundary.
        return DistributedDataParallel(model, device_ids=device_ids, static_graph=True)
    if parallelism == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for block in transformer_blocks(model):
            fully_shard(block, mp_policy=policy)
        # fully_shard cannot shard 0-d parameters (t and b): they stay replicated, and their
        # gradients are averaged across ranks by a hook instead.
        scalars = [p for p in model.parameters() if p.ndim == 0]
        fully_shard(model, mp_policy=policy, ignored_params=set(scalars))
        for param in scalars:
            param.register_post_accumulate_grad_hook(_average_grad_across_ranks)
        return model
    raise ValueError(f"unknown parallelism {parallelism!r}: ddp or fsdp")


def _average_grad_across_ranks(param: torch.Tensor) -> None:
    dist.all_reduce(param.grad)  # gloo has no AVG op
    param.grad.div_(dist.get_world_size())


def is_dtensor(tensor: object) -> bool:
    """Whether `tensor` is a DTensor (an FSDP2 shard), without importing torch.distributed.tensor
    (~0.5 s a process) where nothing was sharded: no DTensor exists before that module is loaded."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm; returns the norm before clipping.

    Under FSDP2 most gradients are DTensor shards and a few (t, b) are plain tensors; the norm of
    each kind is taken on its own (a DTensor norm reduces over ranks) and then combined.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    sharded = [g for g in grads if is_dtensor(g)]
    plain = [g for g in grads if not is_dtensor(g)]
    squares = []
    for group in (sharded, plain):
        if group:
            norm = torch.nn.utils.get_total_norm(group)
            squares.append((norm.full_tensor() if is_dtensor(norm) else norm) ** 2)
    if not squares:
        return 0.0
    total = torch.stack(squares).sum().sqrt()
    if max_norm > 0:
        for group in (sharded, plain):
            if group:
                torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return float(total)


def reshard(model: nn.Module) -> None:
    """Free the gathered weights of an FSDP2 root that ran forward only (no backward): FSDP2
    keeps the root's parameters unsharded after forward, expecting the backward to reshard
    them. Teachers never run backward; left unsharded they hold full root weights and their
    parameters no longer line up with the student's shards. No-op without FSDP2 (nothing is an
    FSDPModule before torch.distributed.fsdp is loaded)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is not None and isinstance(model, fsdp.FSDPModule):
        model.reshard()


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
