"""`python -m curation shards`: write the kept pool samples as shuffled WebDataset training shards.

keep = success ∧ AND of the required stages' keep columns (balance: keep_balance; score:
keep_score; neardup: keep_dedup ∧ ¬contaminated; debias: keep_debias; langmix: keep_langmix;
nsfw: keep_nsfw). The default --require names every one of them, so the shards apply whichever
curation columns the pool has; a required stage that was never run (no POOL/curation/STAGE) is
not applied, and TRAIN/_plan/plan.json (`applied`, `not_applied`) and the stage's note say so.
Name the stages to apply only some (`--require balance,neardup`).

The order: every kept row gets a 64-bit hash of (seed, uid); the training order is the kept rows
sorted by it (ties: uid), a uniform random permutation that no process ever holds. With N =
ceil(kept / --samples-per-shard) output shards, shard j holds the rows whose hash lies in slice j
of N equal slices of the hash range, in hash order. So a shard's size is Binomial(kept, 1/N):
its mean is at most --samples-per-shard and it varies by about its square root (±1% at 10k);
TRAIN/sizes.json ({"00000.tar": count, ...}, open_clip's WebDataset loader reads it) has each.

1. Count ("shards_count", per pool shard, no images): kept rows and a digest of their uids; the
   driver adds them up into N and the plan record, which a re-run into the same TRAIN must match.
2. Spill ("shards_spill", per pool shard): read the pool tar once, encode each kept sample's
   training members (resized JPEG, caption, metadata) and split them into <= --max-fan-in files
   by destination (curation/shuffle.py).
3. Shuffle ("shards_shuffle2", ...; only when the pool has more than --max-fan-in shards or N
   more than --max-fan-in): each task merges <= --max-fan-in files and splits them further.
4. Write ("shards", per output shard): read its <= --max-fan-in files, spool the JPEGs to a local
   scratch file, sort by hash and write TRAIN/{shard}.tar + .parquet; then sizes.json.
Each pass commits atomically with done markers, so kill + re-run gives byte-identical shards.
A level's files are deleted once the next level is complete, so the shuffle holds at most two
levels (about twice the kept samples' encoded size) on disk at a time.
Memory per task is bounded by --buffer-mb (spill, shuffle) and by the shard's metadata rows
(write), never by the number of pool or output shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation import fsio
from curation.runner import (
    ShardContext,
    ShardTask,
    StageReport,
    completed_shards,
    marker_url,
    run_stage,
    seeded_hashes,
)
from curation.score.images import ImageDecodeError
from curation.score.pool import iter_samples, list_pool_shards, read_sidecar
from curation.shuffle import (
    DEST,
    ShuffleLevel,
    ShufflePlan,
    ShuffleWriter,
    destinations,
    level_tasks,
)
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stats import stats_dir
from curation.training_samples import (
    KEEP_COLUMNS,
    ORDER,
    SHUFFLE_SCHEMA,
    WriteTrainingShard,
    encode_sample,
    kept_rows,
    shard_keep_mask,
)

PLAN_RECORD = "_plan/plan.json"
COUNT_DIR = "_plan/count"
SHUFFLE_DIR = "_shuffle"
SHUFFLE_CLEARED = "_plan/shuffle_cleared.json"
SIZES = "sizes.json"
ROUTE_PURPOSE = "shards"
SPILL_BATCH_ROWS = 256
# Every stage with a keep column, in pipeline order: the default applies each one that ran.
DEFAULT_REQUIRE = ("balance", "score", "neardup", "nsfw", "debias", "langmix")


@dataclass(frozen=True)
class ShardsConfig:
    pool: str
    out: str
    samples_per_shard: int = 10_000
    require: tuple[str, ...] = DEFAULT_REQUIRE
    image_size: int | None = 256  # shorter side in pixels (downscale only); None: pool JPEGs
    max_fan_in: int = 64  # the most shuffle files one task reads or writes
    buffer_mb: float = 128.0  # rows a spill or shuffle task buffers before writing

    def __post_init__(self) -> None:
        unknown = [s for s in self.require if s not in KEEP_COLUMNS]
        if unknown:
            raise ConfigError(
                f"unknown --require stage(s) {unknown}; known: {sorted(KEEP_COLUMNS)}"
            )
        if self.samples_per_shard < 1:
            raise ConfigError(f"--samples-per-shard must be >= 1, got {self.samples_per_shard}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"--image-size must be >= 1, got {self.image_size}")
        if self.max_fan_in < 2:
            raise ConfigError(f"--max-fan-in must be >= 2, got {self.max_fan_in}")
        if self.buffer_mb <= 0:
            raise ConfigError(f"--buffer-mb must be > 0, got {self.buffer_mb}")

    @property
    def buffer_bytes(self) -> int:
        return int(self.buffer_mb * 2**20)


@dataclass(frozen=True)
class CountKept:
    """Per pool shard: successes, kept rows, removals per stage, and an order-free uid digest."""

    pool: str
    applied: tuple[str, ...]
    seed: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        _tar, sidecar = task.inputs
        uids = read_sidecar(sidecar, ["uid"])["uid"]
        keep, removed = shard_keep_mask(self.pool, task.shard_id, uids, list(self.applied))
        kept = [uid for uid, k in zip(uids.to_pylist(), keep) if k]
        digest = int(seeded_hashes(kept, self.seed, "digest").sum(dtype=np.uint64))
        ctx.stats.rows_in, ctx.stats.rows_out = len(uids), len(kept)
        for stage, count in removed.items():
            ctx.stats.drop(f"removed_by_{stage}", count)
        ctx.stats.extra.update(removed=removed, uid_digest=digest)


@dataclass(frozen=True)
class SpillKeptSamples:
    """Level 1 of the shuffle: a pool shard's kept samples, encoded, split by destination."""

    pool: str
    applied: tuple[str, ...]
    plan: ShufflePlan
    # The pool's shard ids (5 digits) as sorted integers: a shard's position is its source
    # number. 8 bytes per pool shard, which Ray hands to every task without a copy.
    pool_ids: np.ndarray = field(hash=False, compare=False)
    image_size: int | None
    seed: int
    buffer_bytes: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        tar_url, sidecar_url = task.inputs
        rows = kept_rows(self.pool, task.shard_id, sidecar_url, list(self.applied))
        order = seeded_hashes(rows["uid"].to_pylist(), self.seed, ROUTE_PURPOSE)
        dest = destinations(order, self.plan.dests)
        wanted = {
            row["key"]: {**row, ORDER: int(h), DEST: int(d)}
            for row, h, d in zip(rows.to_pylist(), order, dest)
        }
        ctx.stats.rows_in = len(wanted)
        source = int(np.searchsorted(self.pool_ids, int(task.shard_id)))
        names = {
            r: fsio.join(SHUFFLE_DIR, self.plan.file_name(1, r, source))
            for r in range(self.plan.ranges_at(1))
        }

        def bucket_of(table: pa.Table) -> np.ndarray:
            return self.plan.range_of(table[DEST].to_numpy(), 1)

        batch: list[dict[str, Any]] = []
        with ShuffleWriter(ctx, names, SHUFFLE_SCHEMA, bucket_of, self.buffer_bytes) as writer:
            for key, members in iter_samples(tar_url):
                row = wanted.pop(key, None)
                if row is None:
                    continue
                try:
                    jpg, width, height = encode_sample(members, self.image_size)
                except ImageDecodeError as exc:
                    ctx.stats.error("undecodable_image", f"{tar_url}:{key}", str(exc))
                    continue
                batch.append(
                    {
                        **row,
                        "source_shard": task.shard_id,
                        "source_key": key,
                        "jpg": jpg,
                        "width": width,
                        "height": height,
                        "sha256": hashlib.sha256(jpg).hexdigest(),
                    }
                )
                if len(batch) >= SPILL_BATCH_ROWS:
                    writer.add(pa.Table.from_pylist(batch, schema=SHUFFLE_SCHEMA))
                    batch = []
            writer.add(pa.Table.from_pylist(batch, schema=SHUFFLE_SCHEMA))
        for key in wanted:
            ctx.stats.error("missing_in_tar", f"{tar_url}:{key}", "kept sample is not in the tar")
        ctx.stats.rows_out = writer.rows_out
        ctx.stats.extra.update(files_read=1, files_written=len(names))


def shard_name(plan: ShufflePlan, dest: int) -> str:
    return f"{dest:0{plan.width}d}"


def count_kept(config: ShardsConfig, applied: list[str], options: RunOptions) -> StageReport:
    """The count pass; it runs every time (its folder is scratch), so the plan sees the pool of
    now, and its per-shard records come back in the report."""
    count_dir = fsio.join(config.out, COUNT_DIR)
    fsio.remove(count_dir)
    tasks = [ShardTask(s.shard_id, (s.tar, s.sidecar)) for s in list_pool_shards(config.pool)]
    report = run_stage(
        "shards_count",
        CountKept(config.pool, tuple(applied), options.seed),
        tasks,
        count_dir,
        **options.stage_args(),
    )
    fsio.remove(count_dir)
    return report


def plan_record(
    config: ShardsConfig, applied: list[str], counts: StageReport, seed: int
) -> dict[str, Any]:
    removed = dict.fromkeys(applied, 0)
    for record in counts.completed:
        for stage, count in record["extra"]["removed"].items():
            removed[stage] += count
    kept = sum(record["rows_out"] for record in counts.completed)
    digest = sum(record["extra"]["uid_digest"] for record in counts.completed) % 2**64
    out_shards = -(-kept // config.samples_per_shard)
    plan = ShufflePlan(
        len(counts.completed) + len(counts.skipped), max(1, out_shards), config.max_fan_in
    )
    return {
        "required": list(config.require),
        "applied": applied,
        "not_applied": [s for s in config.require if s not in applied],
        "pool_shards": plan.sources,
        "pool_successes": sum(record["rows_in"] for record in counts.completed),
        "removed_by_stage": removed,
        "kept": kept,
        "kept_uid_digest": f"{digest:016x}",
        "samples_per_shard": config.samples_per_shard,
        "image_size": config.image_size,
        "seed": seed,
        "out_shards": out_shards,
        "shuffle": plan.to_record(),
    }


def reset_cleared_shuffle(out: str, levels: int) -> None:
    """The shuffle files are deleted once every output shard exists; if one is lost later, the
    shuffle runs again: forget its done markers (markers first, then the flag)."""
    flag = fsio.join(out, SHUFFLE_CLEARED)
    if not fsio.exists(flag):
        return
    for stage in shuffle_stages(levels):
        fsio.remove(stats_dir(out, stage))
    fsio.remove(fsio.join(out, SHUFFLE_DIR))
    fsio.remove(flag)


def shuffle_stages(levels: int) -> list[str]:
    return ["shards_spill"] + [f"shards_shuffle{level}" for level in range(2, levels + 1)]


def run(config: ShardsConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    applied = [s for s in config.require if fsio.exists(fsio.join(config.pool, "curation", s))]
    counts = count_kept(config, applied, options)
    reports = [counts]
    if not counts.ok:
        return reports
    record = plan_record(config, applied, counts, options.seed)
    fsio.check_plan(fsio.join(config.out, PLAN_RECORD), record, f"shards {config.out}")
    plan = ShufflePlan(**{k: record["shuffle"][k] for k in ("sources", "dests", "fan")})
    out_ids = [shard_name(plan, d) for d in range(record["out_shards"])]
    stage_args = options.stage_args()
    root_url = fsio.join(config.out, SHUFFLE_DIR)
    if set(out_ids) - completed_shards(config.out, "shards"):
        reset_cleared_shuffle(config.out, plan.levels)
        pool = list_pool_shards(config.pool)
        spill = SpillKeptSamples(
            config.pool,
            tuple(applied),
            plan,
            np.array([int(s.shard_id) for s in pool], dtype=np.int64),
            config.image_size,
            options.seed,
            config.buffer_bytes,
        )
        tasks = [ShardTask(s.shard_id, (s.tar, s.sidecar)) for s in pool]
        reports.append(run_stage("shards_spill", spill, tasks, config.out, **stage_args))
        for level in range(2, plan.levels + 1):
            if not reports[-1].ok:
                return reports
            step = ShuffleLevel(SHUFFLE_DIR, plan, level, SHUFFLE_SCHEMA, config.buffer_bytes)
            tasks = level_tasks(plan, root_url, level)
            reports.append(
                run_stage(f"shards_shuffle{level}", step, tasks, config.out, **stage_args)
            )
            if reports[-1].ok:  # every level-`level` file exists: the level below is spent
                fsio.remove(fsio.join(root_url, str(level - 1)))
        if not reports[-1].ok:
            return reports
    tasks = [
        ShardTask(name, (plan.pattern(root_url, plan.levels, d, plan.final_sources()),))
        for d, name in enumerate(out_ids)
    ]
    write = run_stage(
        "shards",
        WriteTrainingShard(SHUFFLE_DIR, plan, config.samples_per_shard),
        tasks,
        config.out,
        **stage_args,
    )
    reports.append(write)
    if write.ok:
        write_sizes(config.out, out_ids, write)
        fsio.write_json(fsio.join(config.out, SHUFFLE_CLEARED), {"cleared": True})
        fsio.remove(root_url)  # every output shard is written; the shuffle files were a buffer
    write.summary.update(record)
    write.notes.append(describe(record))
    return reports


def write_sizes(out: str, out_ids: list[str], write: StageReport) -> None:
    """TRAIN/sizes.json, {"00000.tar": samples, ...}: what open_clip's loader reads."""
    rows = {record["shard"]: record["rows_out"] for record in write.completed}
    for shard in out_ids:
        if shard not in rows:
            rows[shard] = fsio.read_json(marker_url(out, "shards", shard), expect=dict)["rows_out"]
    sizes = {f"{shard}.tar": rows[shard] for shard in out_ids}
    fsio.write_bytes(fsio.join(out, SIZES), json.dumps(sizes, indent=0, sort_keys=True).encode())


def describe(record: dict[str, Any]) -> str:
    not_applied = (
        f" (NOT applied, never run: {', '.join(record['not_applied'])})"
        if record["not_applied"]
        else ""
    )
    return (
        f"shards: {record['kept']:,} of {record['pool_successes']:,} samples kept into "
        f"{record['out_shards']} shards; applied {', '.join(record['applied']) or 'nothing'}"
        f"{not_applied}; removed per stage {record['removed_by_stage']}; shuffle "
        f"{record['shuffle']['levels']} level(s), fan-in <= {record['shuffle']['fan']}"
    )


def config_from_args(args: argparse.Namespace) -> ShardsConfig:
    return ShardsConfig(
        pool=args.pool,
        out=args.out,
        samples_per_shard=args.samples_per_shard,
        require=tuple(s.strip() for s in args.require.split(",") if s.strip()),
        image_size=None if args.keep_source_size else args.image_size,
        max_fan_in=args.max_fan_in,
        buffer_mb=args.buffer_mb,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shards", help="write kept pool samples as training shards")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--out", required=True, help="training shard folder")
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=10_000,
        help="mean samples per output shard is at most this (sizes vary; see sizes.json)",
    )
    parser.add_argument(
        "--require",
        default=",".join(DEFAULT_REQUIRE),
        help="stages whose keep columns must all be true; a stage that never ran is not applied "
        "(plan.json lists applied and not_applied). Default: every stage with a keep column",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--image-size", type=int, default=256, help="shorter side in pixels (downscale only)"
    )
    size.add_argument(
        "--keep-source-size", action="store_true", help="copy the pool JPEGs (NaFlex)"
    )
    parser.add_argument(
        "--max-fan-in",
        type=int,
        default=64,
        help="the most shuffle files one task reads or writes (more levels when exceeded)",
    )
    parser.add_argument(
        "--buffer-mb",
        type=float,
        default=128.0,
        help="rows a spill or shuffle task buffers before writing a row group",
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
