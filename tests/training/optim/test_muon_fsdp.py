"""Muon and its AdamW groups on FSDP2-sharded parameters (DTensors) over two gloo processes
step exactly like one process holding the whole model."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.optim.muon import Muon

WORLD = 2


def make_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 6))


def make_optimizer(model: torch.nn.Module) -> Muon:
    matrices = [p for p in model.parameters() if p.ndim == 2]
    vectors = [p for p in model.parameters() if p.ndim != 2]
    return Muon(
        [{"params": matrices}, {"params": vectors, "use_muon": False}],
        lr=0.05,
        weight_decay=0.1,
        ns_dtype=torch.float32,
    )


def rank_inputs(rank: int) -> torch.Tensor:
    return torch.randn(4, 8, generator=torch.Generator().manual_seed(100 + rank))


def train_two_steps(model, optimizer, inputs_per_step):
    for inputs in inputs_per_step:
        optimizer.zero_grad()
        loss = sum(model(x).square().mean() for x in inputs) / len(inputs)
        loss.backward()
        optimizer.step()


def _worker(rank, port, out_path):
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        model = make_model()
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        optimizer = make_optimizer(model)
        # FSDP averages gradients over ranks: the same as one process averaging both inputs.
        train_two_steps(model, optimizer, [[rank_inputs(rank)], [rank_inputs(rank) * 2]])
        full = [p.full_tensor() for p in model.parameters()]
        if rank == 0:
            torch.save(full, out_path)
        # Leave together: a rank that tears its gloo group down while the other still talks to it
        # can abort the other ("terminate called without an active exception", seen once in CI).
        dist.barrier()
    finally:
        dist.destroy_process_group()


# Two spawned processes importing torch: ~10 s alone, ~20 s on a busy 2-core box.
@pytest.mark.slow
def test_muon_on_fsdp2_shards_matches_a_single_process(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out_path = str(tmp_path / "params.pt")
    mp.spawn(_worker, args=(port, out_path), nprocs=WORLD, join=True)
    sharded = torch.load(out_path)

    model = make_model()
    inputs = [[rank_inputs(r) for r in range(WORLD)], [rank_inputs(r) * 2 for r in range(WORLD)]]
    train_two_steps(model, make_optimizer(model), inputs)
    initial = list(make_model().parameters())
    for got, want, start in zip(sharded, model.parameters(), initial, strict=True):
        assert (want - start).abs().max() > 1e-3  # the step moved the parameter
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
