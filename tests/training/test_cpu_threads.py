"""A CPU run leaves a core to each data-loader worker instead of oversubscribing OpenMP."""

import os

import torch

from training.distributed import DistEnv, set_cpu_threads

CPU = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_torch_threads_leave_the_loader_workers_their_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(CPU, loader_workers=2) == 6
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_cpu_threads(CPU, loader_workers=1) == 3
        assert set_cpu_threads(CPU, loader_workers=9) == 1
    finally:
        torch.set_num_threads(before)


def test_an_explicit_omp_num_threads_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    assert set_cpu_threads(CPU, loader_workers=0) == before
