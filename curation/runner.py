"""The stage runner: map a shard function over input shards with Ray, resumably.

A stage is a function `fn(task, ctx)` from one input shard to one output shard. It writes its
outputs through `ctx.open_output` (atomic commit) and counts what it did in `ctx.stats`. After the
function returns, the runner writes `OUT/_stats/STAGE/SHARD.json`, which is both the statistics
record and the shard's done marker: a re-run skips shards that have one. A shard whose function
raises is reported (with its inputs and the cause) in `OUT/_errors/STAGE/SHARD.json` and does not
stop the other shards; re-running the stage retries it.

Ray runs locally by default (`ray.init()`); with `RAY_ADDRESS` set, on that cluster. Worker and
node failures are retried by Ray (`max_retries`); exceptions raised by the stage are not, because
bad input fails the same way every time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from curation import fsio
from curation.stats import ShardStats, stats_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: a shard id (unique within the stage) and the input URLs it reads."""

    shard_id: str
    inputs: tuple[str, ...] = ()


def stable_bucket(value: str, buckets: int) -> int:
    """A bucket in [0, buckets) for `value`, the same on every machine and Python process: how
    stages hash-partition rows (URLs, hosts, uids, sha256s) so each task owns one key range."""
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def seeded_hashes(values: Sequence[object], seed: int, purpose: str) -> np.ndarray:
    """A uniform 64-bit hash per value, a pure function of (seed, purpose, value): per-row random
    draws (balancing's keep draws, the shuffle's order) without any global table."""
    key = f"{purpose}:{seed}".encode()[:64]
    digests = b"".join(
        hashlib.blake2b(str(value).encode(), digest_size=8, key=key).digest() for value in values
    )
    return np.frombuffer(digests, dtype="<u8").copy()


def shard_seed(seed: int, shard_id: str) -> int:
    """A 64-bit seed derived from the run seed and the shard id (stable across machines)."""
    digest = hashlib.blake2b(f"{seed}:{shard_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class ShardContext:
    """What a stage function gets besides its task: where to write, its seed, its stats."""

    def __init__(self, stage: str, task: ShardTask, out_dir: str, seed: int):
        self.stage = stage
        self.task = task
        self.shard_id = task.shard_id
        self.out_dir = out_dir
        self.seed = shard_seed(seed, task.shard_id)
        self.rng = np.random.default_rng(self.seed)
        self.stats = ShardStats()
        self.outputs: list[str] = []

    def output_url(self, name: str) -> str:
        return fsio.join(self.out_dir, name)

    @contextlib.contextmanager
    def open_output(self, name: str) -> Iterator[BinaryIO]:
        """Write one output file atomically (it appears only if the block succeeds)."""
        url = self.output_url(name)
        with fsio.open_atomic(url) as handle:
            yield handle
        self.outputs.append(name)

    def write_parquet(self, name: str, table: pa.Table) -> None:
        with self.open_output(name) as handle:
            pq.write_table(table, handle, compression="zstd")


StageFn = Callable[[ShardTask, ShardContext], None]


@dataclass
class StageReport:
    stage: str
    out_dir: str
    completed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # the stage's own numbers
    notes: list[str] = field(default_factory=list)  # lines describe() prints after the counts

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        head = (
            f"{self.stage}: {len(self.completed)} shards done, {len(self.skipped)} already "
            f"done, {len(self.failed)} failed"
        )
        lines = [head]
        lines.extend(self.notes)
        for failure in self.failed:
            lines.append(
                f"  FAILED shard {failure['shard']} ({', '.join(failure['inputs']) or '-'}): "
                f"{failure['error_type']}: {failure['message']}"
            )
        return "\n".join(lines)


def marker_url(out_dir: str, stage: str, shard_id: str) -> str:
    return fsio.join(stats_dir(out_dir, stage), f"{shard_id}.json")


def error_url(out_dir: str, stage: str, shard_id: str) -> str:
    return fsio.join(out_dir, "_errors", stage, f"{shard_id}.json")


def run_shard(stage: str, fn: StageFn, task: ShardTask, out_dir: str, seed: int) -> dict[str, Any]:
    """Run one shard and commit its marker; a raised exception becomes a failure record."""
    ctx = ShardContext(stage, task, out_dir, seed)
    started = time.time()
    try:
        fn(task, ctx)
    except Exception as exc:  # noqa: BLE001 - any stage error is reported, never fatal to others
        failure = {
            "stage": stage,
            "shard": task.shard_id,
            "inputs": list(task.inputs),
            "error_type": type(exc).__name__,
            "message": str(exc),
            "traceback": traceback.format_exc(),
            "host": socket.gethostname(),
        }
        fsio.write_json(error_url(out_dir, stage, task.shard_id), failure)
        return {"failed": True, **failure}
    record = {
        "stage": stage,
        "shard": task.shard_id,
        "inputs": list(task.inputs),
        "outputs": ctx.outputs,
        "seed": ctx.seed,
        "host": socket.gethostname(),
        "started_at": started,
        "finished_at": time.time(),
        "wall_seconds": time.time() - started,
        **ctx.stats.to_record(),
    }
    fsio.write_json(marker_url(out_dir, stage, task.shard_id), record)
    stale_error = error_url(out_dir, stage, task.shard_id)
    if fsio.exists(stale_error):
        fs, path = fsio.filesystem(stale_error)
        fs.rm(path)
    return {"failed": False, **record}


def completed_shards(out_dir: str, stage: str) -> set[str]:
    fs, path = fsio.filesystem(stats_dir(out_dir, stage))
    if not fs.exists(path):
        return set()
    return {
        os.path.basename(p)[: -len(".json")]
        for p in fs.ls(path, detail=False)
        if p.endswith(".json")
    }


def _loopback_only() -> None:
    """Make this process's local Ray instance listen on 127.0.0.1 only.

    Ray turns a node address of 127.0.0.1 into the machine's outward IP, and its servers (GCS,
    raylet, workers, agents) listen on every interface unless the node IP is loopback. Ray's own
    switch for single-machine clusters (what it uses on macOS and Windows) makes the node IP
    127.0.0.1; Ray reads it when imported, so it is set both in the environment (for the
    processes Ray starts) and in the imported constant."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def ensure_ray(*, num_cpus: int | None = None, runtime_env: dict[str, Any] | None = None) -> None:
    """Start (or join, with RAY_ADDRESS) a Ray session unless one is running. `num_cpus` sizes a
    private local instance (a cluster that is joined keeps its own); `runtime_env` is Ray's."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise RuntimeError(
            f"RAY_ADDRESS={address} is a Ray Jobs API address: submit the command with "
            "`python -m curation submit -- COMMAND ...` (make crawl/curate do this), or point "
            "RAY_ADDRESS at the cluster's GCS address (HOST:6379) to drive it from here"
        )
    if not address:
        _loopback_only()
    ray.init(
        # "local" starts a private instance: never join a cluster someone else started here.
        address=address or "local",
        _node_ip_address=None if address else "127.0.0.1",
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        runtime_env=runtime_env,
        num_cpus=None if address else num_cpus,
    )


def run_stage(
    stage: str,
    fn: StageFn,
    tasks: Sequence[ShardTask],
    out_dir: str,
    *,
    seed: int = 0,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 3,
    max_in_flight: int | None = None,
    use_ray: bool = True,
    progress: bool = True,
) -> StageReport:
    """Run `fn` over every task not yet done; return what completed, was skipped, or failed.

    `use_ray=False` runs the shards one after another in this process (profiling, debugging);
    the outputs are the same.
    """
    ids = [task.shard_id for task in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"stage {stage}: shard ids must be unique, got duplicates in {ids[:10]}")
    fsio.makedirs(out_dir)
    fsio.remove_stale_temporaries(out_dir)
    done = completed_shards(out_dir, stage)
    report = StageReport(stage, out_dir, skipped=[t.shard_id for t in tasks if t.shard_id in done])
    todo = [task for task in tasks if task.shard_id not in done]
    bar = tqdm(
        total=len(tasks),
        initial=len(report.skipped),
        desc=stage,
        unit="shard",
        disable=not progress,
        dynamic_ncols=True,
    )

    def collect(result: dict[str, Any]) -> None:
        (report.failed if result.pop("failed") else report.completed).append(result)
        bar.update(1)

    if not use_ray:
        for task in todo:
            collect(run_shard(stage, fn, task, out_dir, seed))
    else:
        _run_on_ray(
            stage, fn, todo, out_dir, seed, num_cpus, num_gpus, max_retries, max_in_flight, collect
        )
    bar.close()
    return report


def _run_on_ray(
    stage: str,
    fn: StageFn,
    todo: list[ShardTask],
    out_dir: str,
    seed: int,
    num_cpus: float,
    num_gpus: float,
    max_retries: int,
    max_in_flight: int | None,
    collect: Callable[[dict[str, Any]], None],
) -> None:
    import ray

    ensure_ray()
    remote = ray.remote(run_shard).options(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_retries=max_retries,
        retry_exceptions=False,
        name=f"{stage}",
    )
    if max_in_flight is None:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        max_in_flight = max(2, int(2 * cluster_cpus / max(num_cpus, 0.01)))
    fn_ref = ray.put(fn)
    pending: dict[Any, ShardTask] = {}
    queue = list(reversed(todo))
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            task = queue.pop()
            pending[remote.remote(stage, fn_ref, task, out_dir, seed)] = task
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            task = pending.pop(ref)
            try:
                collect(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - the worker or node died past its retries
                failure = {
                    "failed": True,
                    "stage": stage,
                    "shard": task.shard_id,
                    "inputs": list(task.inputs),
                    "error_type": type(exc).__name__,
                    "message": str(exc).splitlines()[0] if str(exc) else repr(exc),
                    "traceback": "",
                }
                fsio.write_json(
                    error_url(out_dir, stage, task.shard_id),
                    {k: v for k, v in failure.items() if k != "failed"},
                )
                collect(failure)
