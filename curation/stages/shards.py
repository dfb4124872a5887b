"""`python -m curation shards`: write the kept pool samples as shuffled WebDataset training shards.

keep = success ∧ AND of the required stages' keep columns (balance: keep_balance; score:
keep_score; neardup: keep_dedup ∧ ¬contaminated). A required stage that was never run is not
applied, and TRAIN/_plan/plan.json says so.

1. Plan (driver): the kept uids, in pool order, get a seeded permutation and are cut into output
   shards of --samples-per-shard. The plan is a pure function of the inputs and the seed; it is
   saved in TRAIN/_plan/plan.parquet, and a re-run into the same TRAIN must reproduce it exactly.
2. Spill ("shards_spill", per pool shard): read the pool tar once, encode each kept sample's
   training members (resized JPEG, caption, JSON) and write them sorted by output shard.
3. Write ("shards", per output shard): read its rows from every spill file (row groups are
   pruned by output shard), order them by plan index, and write TRAIN/{shard}.tar + .parquet.
Each pass commits atomically with done markers, so kill + re-run gives byte-identical shards.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation import fsio
from curation.runner import ShardContext, ShardTask, completed_shards, marker_url, run_stage
from curation.score.images import ImageDecodeError, decode_rgb
from curation.score.pool import iter_samples, list_pool_shards, read_sidecar
from curation.tars import add_member

KEEP_COLUMNS = {
    "balance": ("keep_balance",),
    "score": ("keep_score",),
    "neardup": ("keep_dedup", "!contaminated"),
}
PLAN = "_plan/plan.parquet"
PLAN_RECORD = "_plan/plan.json"
SPILL_DIR = "_spill"
SPILL_ROW_GROUP = 128
INDEX_COLUMNS = ("uid", "url", "text", "original_width", "original_height")


def _read_parquet(url: str, **kwargs: Any) -> pa.Table:
    fs, path = fsio.filesystem(url)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle, **kwargs)


def shard_keep_mask(
    pool: str, shard_id: str, uids: pa.Array, required: list[str], applied: list[str]
) -> tuple[np.ndarray, dict[str, int]]:
    """Keep mask over the shard's successful rows, and how many each stage removed."""
    keep = np.ones(len(uids), dtype=bool)
    removed: dict[str, int] = {}
    for stage in applied:
        url = fsio.join(pool, "curation", stage, f"{shard_id}.parquet")
        if not fsio.exists(url):
            raise SystemExit(f"shards: {url} is missing (stage {stage} ran on other shards only)")
        table = _read_parquet(url)
        by_uid = dict(zip(table["uid"].to_pylist(), range(table.num_rows)))
        index = np.array([by_uid.get(uid, -1) for uid in uids.to_pylist()], dtype=np.int64)
        stage_keep = index >= 0
        for column in KEEP_COLUMNS[stage]:
            negate = column.startswith("!")
            values = table[column.lstrip("!")].to_numpy(zero_copy_only=False).astype(bool)
            values = ~values if negate else values
            stage_keep &= np.where(index >= 0, values[np.maximum(index, 0)], False)
        removed[stage] = int(np.count_nonzero(keep & ~stage_keep))
        keep &= stage_keep
    return keep, removed


def plan_shards(
    pool: str, required: list[str], samples_per_shard: int, seed: int
) -> tuple[pa.Table, dict[str, Any]]:
    applied = [s for s in required if fsio.exists(fsio.join(pool, "curation", s))]
    unknown = [s for s in required if s not in KEEP_COLUMNS]
    if unknown:
        raise SystemExit(
            f"shards: unknown --require stage(s) {unknown}; known: {sorted(KEEP_COLUMNS)}"
        )
    parts, removed_total, successes = [], dict.fromkeys(applied, 0), 0
    for shard in list_pool_shards(pool):
        rows = read_sidecar(shard.sidecar, ["uid", "key"])
        successes += rows.num_rows
        keep, removed = shard_keep_mask(pool, shard.shard_id, rows["uid"], required, applied)
        for stage, count in removed.items():
            removed_total[stage] += count
        kept = rows.filter(pa.array(keep))
        parts.append(
            kept.append_column(
                "source_shard", pa.array([shard.shard_id] * kept.num_rows, pa.string())
            )
        )
    kept = (
        pa.concat_tables(parts) if parts else pa.table({"uid": [], "key": [], "source_shard": []})
    )
    order = np.random.default_rng(seed).permutation(kept.num_rows)
    position = np.empty(kept.num_rows, dtype=np.int64)
    position[order] = np.arange(kept.num_rows)
    plan = pa.table(
        {
            "uid": kept["uid"],
            "source_shard": kept["source_shard"],
            "source_key": kept["key"],
            "out_shard": pa.array([f"{p // samples_per_shard:05d}" for p in position], pa.string()),
            "out_index": pa.array(position % samples_per_shard, pa.int32()),
        }
    )
    record = {
        "required": required,
        "applied": applied,
        "not_applied": [s for s in required if s not in applied],
        "pool_successes": successes,
        "removed_by_stage": removed_total,
        "kept": kept.num_rows,
        "samples_per_shard": samples_per_shard,
        "seed": seed,
        "out_shards": -(-kept.num_rows // samples_per_shard),
    }
    return plan, record


def key_width(samples_per_shard: int) -> int:
    return max(4, len(str(samples_per_shard - 1)))


def resize_for_training(data: bytes, short_side: int, quality: int = 90) -> tuple[bytes, int, int]:
    """Downscale so the shorter side is `short_side` (never upscale; small images keep their
    bytes); re-encode as JPEG. Decoding always happens, so a corrupt image is caught here."""
    image = decode_rgb(data, min_side=short_side)  # may come back DCT-downscaled (draft)
    original_width, original_height = Image.open(io.BytesIO(data)).size
    if min(original_width, original_height) <= short_side:
        return data, original_width, original_height
    scale = short_side / min(image.size)
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.BICUBIC,
        reducing_gap=3.0,
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue(), image.size[0], image.size[1]


@dataclass(frozen=True)
class SpillKeptSamples:
    plan_url: str
    image_size: int | None  # None: keep the source bytes (NaFlex)

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        tar_url, sidecar_url = task.inputs
        plan = _read_parquet(self.plan_url, filters=[("source_shard", "=", task.shard_id)])
        wanted = {key: i for i, key in enumerate(plan["source_key"].to_pylist())}
        sidecar = read_sidecar(sidecar_url, list(INDEX_COLUMNS) + ["key"])
        meta = {row["key"]: row for row in sidecar.to_pylist()}
        ctx.stats.rows_in = len(wanted)
        columns: dict[str, list[Any]] = {k: [] for k in ("row", "jpg", "width", "height")}
        for key, members in iter_samples(tar_url):
            row = wanted.pop(key, None)
            if row is None:
                continue
            try:
                if "jpg" not in members:
                    raise ImageDecodeError("no .jpg member")
                if self.image_size is None:
                    image = decode_rgb(members["jpg"])
                    jpg, width, height = members["jpg"], image.size[0], image.size[1]
                else:
                    jpg, width, height = resize_for_training(members["jpg"], self.image_size)
            except ImageDecodeError as exc:
                ctx.stats.error("undecodable_image", f"{tar_url}:{key}", str(exc))
                continue
            for name, value in zip(columns, (row, jpg, width, height)):
                columns[name].append(value)
        for key in wanted:
            ctx.stats.error(
                "missing_in_tar", f"{tar_url}:{key}", "planned sample is not in the tar"
            )
        rows = np.array(columns["row"], dtype=np.int64)
        spill = plan.take(pa.array(rows, pa.int64())).append_column(
            "jpg", pa.array(columns["jpg"], pa.binary())
        )
        spill = spill.append_column("width", pa.array(columns["width"], pa.int32()))
        spill = spill.append_column("height", pa.array(columns["height"], pa.int32()))
        for column in INDEX_COLUMNS[1:]:
            spill = spill.append_column(
                column, pa.array([meta[k][column] for k in spill["source_key"].to_pylist()])
            )
        spill = spill.sort_by([("out_shard", "ascending"), ("out_index", "ascending")])
        ctx.stats.rows_out = spill.num_rows
        with ctx.open_output(f"{SPILL_DIR}/{task.shard_id}.parquet") as handle:
            pq.write_table(spill, handle, row_group_size=SPILL_ROW_GROUP)


@dataclass(frozen=True)
class WriteTrainingShard:
    samples_per_shard: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        missing = [url for url in task.inputs if not fsio.exists(url)]
        if missing:
            raise FileNotFoundError(
                f"spill files missing (re-run from a fresh --out): {missing[:3]}"
            )
        parts = [
            _read_parquet(url, filters=[("out_shard", "=", task.shard_id)]) for url in task.inputs
        ]
        table = pa.concat_tables(parts).sort_by("out_index") if parts else None
        rows = table.to_pylist() if table is not None else []
        ctx.stats.rows_in = ctx.stats.rows_out = len(rows)
        width = key_width(self.samples_per_shard)
        index: dict[str, list[Any]] = {
            k: []
            for k in (
                "uid",
                "key",
                "url",
                "text",
                "width",
                "height",
                "original_width",
                "original_height",
                "sha256",
                "source_shard",
                "source_key",
            )
        }
        with (
            ctx.open_output(f"{task.shard_id}.tar") as handle,
            tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as archive,
        ):
            for row in rows:
                key = f"{task.shard_id}{row['out_index']:0{width}d}"
                record = {
                    "uid": row["uid"],
                    "key": key,
                    "url": row["url"],
                    "text": row["text"],
                    "width": row["width"],
                    "height": row["height"],
                    "original_width": row["original_width"],
                    "original_height": row["original_height"],
                    "source_shard": row["source_shard"],
                    "source_key": row["source_key"],
                }
                add_member(archive, f"{key}.jpg", row["jpg"])
                add_member(archive, f"{key}.txt", (row["text"] or "").encode())
                add_member(archive, f"{key}.json", json.dumps(record, sort_keys=True).encode())
                record["sha256"] = hashlib.sha256(row["jpg"]).hexdigest()
                for column, values in index.items():
                    values.append(record[column])
                ctx.stats.bytes_in += len(row["jpg"])
        ctx.write_parquet(f"{task.shard_id}.parquet", pa.table(index))


def check_or_save_plan(out: str, plan: pa.Table, record: dict[str, Any]) -> None:
    """Save the plan, or insist an earlier (partial) run of this TRAIN folder made the same one."""
    url = fsio.join(out, PLAN)
    if fsio.exists(url):
        previous = _read_parquet(url)
        if not previous.equals(plan):
            raise SystemExit(
                f"shards: {out} was planned from other inputs or settings; "
                "use a new --out (or delete it) to start over"
            )
        return
    with fsio.open_atomic(url) as handle:
        pq.write_table(plan, handle)
    fsio.write_json(fsio.join(out, PLAN_RECORD), record)


def build_training_shards(
    pool: str,
    out: str,
    required: list[str],
    samples_per_shard: int,
    image_size: int | None,
    seed: int = 0,
) -> tuple[bool, dict[str, Any]]:
    plan, record = plan_shards(pool, required, samples_per_shard, seed)
    record["image_size"] = image_size
    check_or_save_plan(out, plan, record)
    plan_url = fsio.join(out, PLAN)
    pool_tasks = [ShardTask(s.shard_id, (s.tar, s.sidecar)) for s in list_pool_shards(pool)]
    spill_urls = tuple(fsio.join(out, SPILL_DIR, f"{t.shard_id}.parquet") for t in pool_tasks)
    out_tasks = [ShardTask(i, spill_urls) for i in sorted(set(plan["out_shard"].to_pylist()))]
    if {t.shard_id for t in out_tasks} - completed_shards(out, "shards"):
        # The spill is deleted once every output shard exists; if one is lost later, spill again.
        for task, url in zip(pool_tasks, spill_urls):
            marker = marker_url(out, "shards_spill", task.shard_id)
            if fsio.exists(marker) and not fsio.exists(url):
                fs, path = fsio.filesystem(marker)
                fs.rm(path)
        spill = run_stage(
            "shards_spill", SpillKeptSamples(plan_url, image_size), pool_tasks, out, seed=seed
        )
        print(spill.describe())
        if not spill.ok:
            return False, record
    write = run_stage("shards", WriteTrainingShard(samples_per_shard), out_tasks, out, seed=seed)
    print(write.describe())
    if write.ok:
        fs, path = fsio.filesystem(fsio.join(out, SPILL_DIR))
        if fs.exists(path):
            fs.rm(path, recursive=True)  # every output shard is written; the spill is only a buffer
    return write.ok, record


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shards", help="write kept pool samples as training shards")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--out", required=True, help="training shard folder")
    parser.add_argument("--samples-per-shard", type=int, default=10_000)
    parser.add_argument(
        "--require",
        default="balance,score,neardup",
        help="stages whose keep columns must all be true (missing stage = not applied)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--image-size", type=int, default=256, help="shorter side in pixels (downscale only)"
    )
    size.add_argument(
        "--keep-source-size", action="store_true", help="copy the pool JPEGs (NaFlex)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    required = [s.strip() for s in args.require.split(",") if s.strip()]
    ok, record = build_training_shards(
        args.pool,
        args.out,
        required,
        args.samples_per_shard,
        None if args.keep_source_size else args.image_size,
        args.seed,
    )
    not_applied = (
        f" (NOT applied, never run: {', '.join(record['not_applied'])})"
        if record["not_applied"]
        else ""
    )
    print(
        f"shards: {record['kept']:,} of {record['pool_successes']:,} samples kept into "
        f"{record['out_shards']} shards; applied {', '.join(record['applied']) or 'nothing'}"
        f"{not_applied}; removed per stage {record['removed_by_stage']}"
    )
    return 0 if ok else 1
