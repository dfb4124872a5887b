"""Two CPU processes on 127.0.0.1 with gloo: DDP ranks stay identical and FSDP2 matches DDP,
through all three phases (one step each: sigmoid + LocCa, then self-distillation against the
EMA and Gram teachers, then the same on a NaFlex batch)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)

from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import TrainArgs, from_dict
from training.distributed import init_distributed, shutdown_distributed
from training.metrics_log import read_metrics
from training.trainer import Trainer, make_loader

STEPS = 3
PHASES = [1, 2, 3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def args_for(text_pattern: str, grounding_pattern: str, parallelism: str) -> TrainArgs:
    return from_dict(
        TrainArgs,
        {
            "model": {"preset": "tiny"},
            "data": {
                "text_shards": text_pattern,
                "grounding_shards": grounding_pattern,
                "batch_size": 4,
                "grounding_fraction": 0.25,
                "num_workers": 0,
                "local_crops": 2,
                "local_crop_size": 24,
                "naflex_token_budget": 512,
            },
            "loss": {"sigmoid_backend": "ring"},
            "schedule": {"steps": STEPS, "phase2_start": 1 / STEPS, "phase3_start": 2 / STEPS},
            "distributed": {"parallelism": parallelism},
        },
    ).resolve()


def train_both_ways(rank: int, world_size: int, port: int, patterns: tuple[str, str], out: str):
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    env = init_distributed()
    try:
        args = args_for(*patterns, "ddp")
        reference = Trainer(args, env)
        loader = make_loader(args, reference.model_cfg, env, reference.tokenizer)
        batches = [next(loader) for _ in range(STEPS)]
        results = {}
        for parallelism in ("ddp", "fsdp"):
            trainer = Trainer(args_for(*patterns, parallelism), env)
            records = [trainer.train_step(batch) for batch in batches]
            results[parallelism] = {
                "losses": [record["loss"] for record in records],
                "silc": [record.get("silc") for record in records],
                "seq_len": [record.get("seq_len") for record in records],
                "weights": gathered_weights(trainer.model, world_size),
                "teacher": gathered_weights(trainer.teacher, world_size),
                "gram_teacher": gathered_weights(trainer.gram_teacher, world_size),
            }
            if parallelism == "fsdp":
                results["fsdp_restored"] = save_and_restore(trainer, env, Path(out).parent / "ckpt")
        if rank == 0:
            torch.save(results, out)
    finally:
        shutdown_distributed()


def gathered_weights(model: torch.nn.Module, world_size: int) -> list[torch.Tensor]:
    """Every rank's view of the full weights, flattened (all-gathered, for the rank-0 file)."""
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    flat = torch.cat([w.detach().float().flatten().cpu() for _, w in sorted(weights.items())])
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    return gathered


def save_and_restore(trainer: Trainer, env, root: Path) -> bool:
    """Checkpoint a sharded model and optimizer, load them into a fresh sharded trainer, and
    check the full weights and optimizer state came back."""
    save_checkpoint(
        root,
        trainer.step,
        trainer.model,
        trainer.optimizer,
        trainer.state_dict(),
        {"position": env.rank},
        {},
        keep=1,
    )
    fresh = Trainer(trainer.args, env)
    restored = load_checkpoint(latest_checkpoint(root), fresh.model, fresh.optimizer)
    options = StateDictOptions(full_state_dict=True)
    before = get_model_state_dict(trainer.model, options=options)
    after = get_model_state_dict(fresh.model, options=options)
    moments_before = get_optimizer_state_dict(trainer.model, trainer.optimizer, options=options)
    moments_after = get_optimizer_state_dict(fresh.model, fresh.optimizer, options=options)
    return (
        restored.data_state == {"position": env.rank}
        and bool(moments_before["state"])
        and all(torch.equal(before[k], after[k]) for k in before)
        and all(
            torch.equal(moments_before["state"][k][m], moments_after["state"][k][m])
            for k in moments_before["state"]
            for m in moments_before["state"][k]
            if isinstance(moments_before["state"][k][m], torch.Tensor)
        )
    )


@pytest.fixture(scope="module")
def two_rank_results(shard_world, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist") / "results.pt")
    patterns = (shard_world.text_pattern, shard_world.grounding_pattern)
    mp.spawn(train_both_ways, args=(2, free_port(), patterns, out), nprocs=2, join=True)
    return torch.load(out, weights_only=False)


def test_the_steps_cover_all_three_phases(two_rank_results):
    ddp = two_rank_results["ddp"]
    assert [silc is not None for silc in ddp["silc"]] == [False, True, True]
    assert [length is not None for length in ddp["seq_len"]] == [False, False, True]


@pytest.mark.parametrize("module", ["weights", "teacher", "gram_teacher"])
def test_ddp_ranks_hold_identical_weights_after_training(two_rank_results, module):
    rank0, rank1 = two_rank_results["ddp"][module]
    assert torch.equal(rank0, rank1)


@pytest.mark.parametrize("module", ["weights", "teacher", "gram_teacher"])
def test_fsdp2_trains_to_the_same_losses_and_weights_as_ddp(two_rank_results, module):
    ddp, fsdp = two_rank_results["ddp"], two_rank_results["fsdp"]
    assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-5)
    assert fsdp["silc"][1:] == pytest.approx(ddp["silc"][1:], rel=1e-5)
    torch.testing.assert_close(fsdp[module][0], ddp[module][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fsdp[module][1], fsdp[module][0])
    assert not torch.equal(ddp[module][0], fsdp[module][0] * 0)  # weights were gathered


def test_fsdp2_checkpoint_restores_sharded_weights_and_optimizer_state(two_rank_results):
    assert two_rank_results["fsdp_restored"]


@pytest.mark.slow
def test_cli_trains_under_torchrun_with_two_processes(shard_world, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "training",
        "train",
        "--preset",
        "tiny",
        "--data",
        shard_world.text_pattern,
        "--grounding",
        shard_world.grounding_pattern,
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "data.batch_size=4",
        "data.num_workers=0",
        "logging.every=1",
        "logging.progress_bar=false",
        "loss.sigmoid_backend=ring",
    ]
    subprocess.run(command, check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["contrastive_samples"] == 3.0 for r in records)  # mean over ranks of 3 each
    folder = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert {p.name for p in folder.iterdir()} >= {
        "data_rank00000.json",
        "data_rank00001.json",
        "model.safetensors",
    }


def _train_command(nproc: int, data: str, out: str, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "training",
        "train",
        "--preset",
        "tiny",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "4",
        "data.num_workers=0",
        "data.grounding_fraction=0",
        "schedule.phase2_start=1.0",
        "schedule.phase3_start=1.0",
        "checkpoint.every=2",
        "logging.every=1",
        "logging.progress_bar=false",
        # No random choice of LocCa's decoding mode: ranks draw differently from one process.
        "loss.parallel_prob=0",
        *overrides,
    ]


@pytest.mark.slow
def test_a_run_on_s3_killed_under_two_ranks_resumes_on_one_and_matches_an_uninterrupted_run(
    tmp_path, s3_bucket
):
    """2 gloo ranks × 4 samples hold the same 8 samples per step as 1 process × 8: with one
    shard and fewer shards than ranks, rank r reads samples r, r+2, ... So the global batches of
    steps 1-2 agree, and the 16-sample shard ends exactly at the step-2 checkpoint: the resumed
    single process starts epoch 1, as the uninterrupted one does at step 3. Every step's loss
    is comparable here; with other shard layouts only the steps before the kill are."""
    import s3fs

    from training.data.synthetic import write_synthetic_shards

    world = write_synthetic_shards(
        tmp_path / "shards", text_shards=1, per_shard=16, with_bad_records=False
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run, reference = f"{s3_bucket}/run", f"{s3_bucket}/reference"
    two_ranks = ("data.batch_size=4", "distributed.parallelism=fsdp", "loss.sigmoid_backend=ring")
    fs = s3fs.S3FileSystem()
    killed = subprocess.Popen(
        _train_command(2, world.text_pattern, run, *two_ranks), env=env, start_new_session=True
    )
    pointer = f"{run}/checkpoints/latest".removeprefix("s3://")
    try:
        deadline = time.time() + 240
        while not (fs.exists(pointer) and fs.cat(pointer) == b"step_00000002"):
            assert killed.poll() is None and time.time() < deadline, "no step-2 checkpoint"
            time.sleep(0.05)
            fs.invalidate_cache()
        os.killpg(killed.pid, signal.SIGKILL)
    finally:
        killed.wait(timeout=60)
    assert killed.returncode != 0  # killed, not finished
    state = fs.ls(f"{run}/checkpoints/step_00000002/state".removeprefix("s3://"))
    assert sorted(p.rsplit("/", 1)[1] for p in state) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
    ]

    one_process = ("data.batch_size=8",)
    subprocess.run(_train_command(1, world.text_pattern, run, *one_process), env=env, check=True)
    subprocess.run(
        _train_command(1, world.text_pattern, reference, *one_process), env=env, check=True
    )

    resumed, uninterrupted = (
        read_metrics(f"{run}/metrics.jsonl"),
        read_metrics(f"{reference}/metrics.jsonl"),
    )
    raw_steps = [
        json.loads(line)["step"]
        for line in fs.cat(f"{run}/metrics.jsonl".removeprefix("s3://")).decode().splitlines()
    ]
    assert raw_steps == [1, 2, 3, 4]  # each step once, the killed segment's extra steps dropped
    for before, after in zip(uninterrupted, resumed, strict=True):
        for key in ("loss", "sigmoid", "locca", "lr", "grad_norm"):
            assert after[key] == pytest.approx(before[key], rel=1e-4, abs=1e-6), (
                before["step"],
                key,
            )
    assert fs.exists(f"{run}/checkpoints/step_00000004/model.safetensors".removeprefix("s3://"))
    assert any("tfevents" in p for p in fs.find(f"{run}/tensorboard".removeprefix("s3://")))
    # The export reads the resumed run's checkpoint straight from S3.
    from training.cli import main as training_main

    exported = tmp_path / "hf"
    assert training_main(["export", "--ckpt", run, "--format", "hf", "--out", str(exported)]) == 0
    assert (exported / "model.safetensors").is_file()
