"""A small run folder with hand-chosen numbers, laid out as the stages write it.

Pool: shard 00000 has 6 URLs (4 downloaded, one http_404, one timeout), shard 00001 has 4 (3
downloaded, one robots_disallowed). The seven downloaded samples A..G carry these curation columns:

    sample  entries        keep_balance  clip score  keep_score  dup_cluster  keep_dedup  contaminated
    A       cat            yes           0.31        yes         7            yes         no
    B       cat, dog       yes           0.22        no          -1           yes         no
    C       cat            no            0.28        yes         7            no          no
    D       dog, red car   yes           0.26        yes         9            yes         no
    E       cat, tree      yes           0.19        no          -1           yes         yes
    F       cat, dog       no            0.35        yes         9            no          no
    G       (none)         no            0.24        no          -1           yes         no

so (first failing check wins) A and D are kept, B and E fail the score, C, F and G the balancing.
Entry counts before: cat 5, dog 3, red car 1, tree 1 (10 matches); after (kept by balancing:
A, B, D, E): cat 3, dog 2, red car 1, tree 1 (7). With t = 2 the head is {cat, dog}: 80% of
matches before, 5/7 = 71.4% after.

Training: `train_round0/` (steps 0-2) and `train/` (steps 0-5), each with one evaluation report
(eval/step_00000005.json: imagenet_like top1 0.0625 and 0.125).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ENTRIES = ["cat", "dog", "red car", "tree"]
SCORE_THRESHOLD = 0.25
BALANCE_T = 2

# (shard, index, status, error_message, host, (original w, h))
POOL_ROWS = [
    ("00000", 0, "success", None, "a.example", (800, 600)),
    ("00000", 1, "success", None, "a.example", (640, 640)),
    ("00000", 2, "success", None, "b.example", (300, 900)),
    ("00000", 3, "success", None, "b.example", (1200, 400)),
    ("00000", 4, "failed_to_download", "http_404", "a.example", (None, None)),
    ("00000", 5, "failed_to_download", "timeout", "b.example", (None, None)),
    ("00001", 0, "success", None, "c.example", (500, 500)),
    ("00001", 1, "success", None, "c.example", (256, 192)),
    ("00001", 2, "success", None, "c.example", (2048, 1024)),
    ("00001", 3, "failed_to_download", "robots_disallowed", "c.example", (None, None)),
]
# Curation columns of the downloaded samples, in POOL_ROWS order (A..G).
CURATION = [
    # name, entries, keep_balance, score, dup_cluster, keep_dedup, contaminated
    ("A", [0], True, 0.31, 7, True, False),
    ("B", [0, 1], True, 0.22, -1, True, False),
    ("C", [0], False, 0.28, 7, False, False),
    ("D", [1, 2], True, 0.26, 9, True, False),
    ("E", [0, 3], True, 0.19, -1, True, True),
    ("F", [0, 1], False, 0.35, 9, False, False),
    ("G", [], False, 0.24, -1, True, False),
]
COLOURS = [
    (200, 40, 40),
    (40, 160, 60),
    (40, 60, 200),
    (220, 200, 40),
    (160, 40, 160),
    (40, 180, 180),
    (120, 120, 120),
]

# The per-shard stats records, named as the stages name them:
# (stage, out folder, shard, rows_in, rows_out, drops, errors, seconds, extra)
STATS = [
    (
        "extract",
        "candidates",
        "00000",
        25,
        15,
        {"no_alt": 6, "bad_url": 4},
        {"truncated_record": 1},
        2.0,
        {"records": 60, "html_pages": 20},
    ),
    (
        "extract",
        "candidates",
        "00001",
        15,
        10,
        {"no_alt": 4, "bad_url": 1},
        {},
        1.0,
        {"records": 40, "html_pages": 12},
    ),
    ("dedup_partition", "dedup", "00000", 25, 25, {}, {}, 0.25, {}),
    ("dedup", "dedup", "00000", 25, 10, {"duplicate_url": 15}, {}, 0.5, {}),
    ("download", "pool", "00000", 6, 4, {"http_404": 1, "timeout": 1}, {}, 3.0, {"bytes": 4000}),
    ("download", "pool", "00001", 4, 3, {"robots_disallowed": 1}, {}, 2.0, {"bytes": 3000}),
    (
        "balance",
        "pool/curation/balance",
        "00000",
        6,
        3,
        {"not_downloaded": 2, "balanced_out": 1},
        {},
        0.2,
        {"kept": 3},
    ),
    (
        "balance",
        "pool/curation/balance",
        "00001",
        4,
        1,
        {"not_downloaded": 1, "balanced_out": 1, "no_entry": 1},
        {},
        0.2,
        {"kept": 1},
    ),
    ("score", "pool/curation/score", "00000", 4, 4, {}, {}, 1.0, {"scored": 4}),
    ("score", "pool/curation/score", "00001", 3, 3, {}, {}, 1.0, {"scored": 3}),
    (
        "score_filter",
        "pool/curation/score",
        "00000",
        4,
        3,
        {"below_score_threshold": 1},
        {},
        0.1,
        {},
    ),
    (
        "score_filter",
        "pool/curation/score",
        "00001",
        3,
        1,
        {"below_score_threshold": 2},
        {},
        0.1,
        {},
    ),
    ("neardup", "pool/curation/neardup", "00000", 4, 3, {"near_duplicate": 1}, {}, 0.3, {}),
    (
        "neardup",
        "pool/curation/neardup",
        "00001",
        3,
        1,
        {"near_duplicate": 1, "eval_contaminant": 1},
        {},
        0.3,
        {},
    ),
    ("shards", "train_shards", "00000", 2, 2, {}, {}, 0.4, {}),
]

# Training log with the trainer's names: phase 1 for steps 0-2, phase 2 (adds SILC) for steps 3-5;
# evals at steps 2 and 5.
METRICS = [
    {
        "step": s,
        "phase": 1 if s < 3 else 2,
        "lr": 1e-3 * (s + 1) / 6,
        "loss": loss,
        "sigmoid": loss * 0.6,
        "locca": loss * 0.4,
        "locca_caption": loss * 0.4,
        "t": 10.0 + 0.1 * s,
        "b": -10 + 0.1 * s,
        "grad_norm": 1.0,
        "samples_per_s": 250.0,
        **({"silc": 0.1} if s >= 3 else {}),
    }
    for s, loss in enumerate([4.0, 3.5, 3.0, 2.0, 1.5, 1.25])
]
METRICS[2]["eval_zeroshot_top1"] = 0.1
METRICS[5]["eval_zeroshot_top1"] = 0.25


def key_of(shard: str, index: int) -> str:
    return f"{shard}{index:04d}"


def uid_of(shard: str, index: int) -> str:
    return f"{int(shard):016x}{index:016x}"


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_run(root: Path, curation_in_pool_order: bool = False) -> Path:
    """The run. By default the curation files hold the downloaded samples only, in reverse order,
    so readers must join on uid; with `curation_in_pool_order` they hold every pool row in the
    pool's order (as balance and score write them), failed downloads with nothing kept."""
    pool = root / "pool"
    pool.mkdir(parents=True)
    downloaded = iter(zip(CURATION, COLOURS))
    for shard in ("00000", "00001"):
        rows = [r for r in POOL_ROWS if r[0] == shard]
        curation = []
        with tarfile.open(pool / f"{shard}.tar", "w") as tar:
            for _, index, status, error, host, (width, height) in rows:
                if status != "success":
                    if curation_in_pool_order:
                        curation.append((uid_of(shard, index), [], False, None, -1, True, False))
                    continue
                (name, *columns), colour = next(downloaded)
                key = key_of(shard, index)
                _add(tar, f"{key}.jpg", jpeg(colour))
                _add(tar, f"{key}.txt", f"a photo of sample {name}".encode())
                _add(tar, f"{key}.json", json.dumps({"uid": uid_of(shard, index)}).encode())
                curation.append((uid_of(shard, index), *columns))
        pq.write_table(
            pa.table(
                {
                    "uid": [uid_of(shard, r[1]) for r in rows],
                    "key": [key_of(shard, r[1]) for r in rows],
                    "url": [f"http://{r[4]}/img/{r[1]}.jpg" for r in rows],
                    "text": [
                        f"a photo of sample {CURATION[_position(r)][0]}"
                        if r[2] == "success"
                        else f"failed url {r[1]}"
                        for r in rows
                    ],
                    "status": [r[2] for r in rows],
                    "error_message": [r[3] for r in rows],
                    "width": pa.array(
                        [64 if r[2] == "success" else None for r in rows], pa.int32()
                    ),
                    "height": pa.array(
                        [48 if r[2] == "success" else None for r in rows], pa.int32()
                    ),
                    "original_width": pa.array([r[5][0] for r in rows], pa.int32()),
                    "original_height": pa.array([r[5][1] for r in rows], pa.int32()),
                    "host": [r[4] for r in rows],
                }
            ),
            pool / f"{shard}.parquet",
        )
        _write_curation(
            pool / "curation", shard, curation if curation_in_pool_order else curation[::-1]
        )
    _write_entry_counts(pool / "curation" / "balance")
    (pool / "curation" / "balance" / "balance_summary.json").write_text(
        json.dumps(
            {
                "t": BALANCE_T,
                "t_per_lang": {},
                "eligible_rows": 7,
                "matched_rows": 6,
                "kept_rows": 4,
            }
        )
    )
    (pool / "curation" / "score" / "thresholds.json").write_text(
        json.dumps(
            {"tag": "test", "threshold": SCORE_THRESHOLD, "top_fraction": None, "basic": None}
        )
    )
    (pool / "curation" / "neardup" / "summary.json").write_text(
        json.dumps(
            {
                "samples": 7,
                "clusters": 2,
                "duplicates_removed": 2,
                "pairs": {"sha256": 1, "embedding": 2, "dhash": 0},
                "contaminated_direct": 1,
                "contaminated_via_cluster": 0,
                "eval_images": 20,
            }
        )
    )
    for stage, folder, shard, rows_in, rows_out, drops, errors, seconds, extra in STATS:
        record = {
            "stage": stage,
            "shard": shard,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "bytes_in": 0,
            "drops": drops,
            "errors": errors,
            "wall_seconds": seconds,
            "started_at": 1000.0,
            "finished_at": 1000.0 + seconds,
            "timings": {},
            "extra": extra,
            "inputs": [],
            "outputs": [],
            "error_examples": [
                {"kind": k, "where": f"{folder}/{shard}", "message": f"example {k}"} for k in errors
            ],
        }
        path = root / folder / "_stats" / stage / f"{shard}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    train = root / "train"
    train.mkdir()
    (train / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    # Two rounds as `make demo` lays them out, each evaluated where `training eval` writes.
    round0 = root / "train_round0"
    round0.mkdir()
    (round0 / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS[:3]))
    for folder, top1 in ((round0, 0.0625), (train, 0.125)):
        (folder / "eval").mkdir()
        (folder / "eval" / "step_00000005.json").write_text(
            json.dumps({"step": 5, "imagenet_like": {"top1": top1, "top5": 0.5}})
        )
    return root


def _position(row: tuple) -> int:
    successes = [r for r in POOL_ROWS if r[2] == "success"]
    return successes.index(row)


def _write_curation(folder: Path, shard: str, rows: list[tuple]) -> None:
    for stage in ("balance", "score", "neardup"):
        (folder / stage).mkdir(parents=True, exist_ok=True)
    uids = [r[0] for r in rows]
    pq.write_table(
        pa.table(
            {
                "uid": uids,
                "metaclip_entries": pa.array([r[1] for r in rows], pa.list_(pa.int32())),
                "keep_balance": [r[2] for r in rows],
            }
        ),
        folder / "balance" / f"{shard}.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "uid": uids,
                "clip_score_test": pa.array([r[3] for r in rows], pa.float32()),
                "keep_score": [r[3] is not None and r[3] >= SCORE_THRESHOLD for r in rows],
            }
        ),
        folder / "score" / f"{shard}.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "uid": uids,
                "dup_cluster": pa.array([r[4] for r in rows], pa.int64()),
                "keep_dedup": [r[5] for r in rows],
                "contaminated": [r[6] for r in rows],
                "nearest_eval": [("eval/000012" if r[6] else None) for r in rows],
            }
        ),
        folder / "neardup" / f"{shard}.parquet",
    )


def _write_entry_counts(folder: Path) -> None:
    counts, kept = [5, 3, 1, 1], [3, 2, 1, 1]
    pq.write_table(
        pa.table(
            {
                "entry": pa.array(range(len(ENTRIES)), pa.int32()),
                "entry_text": ENTRIES,
                "count": pa.array(counts, pa.int64()),
                "p": [min(1.0, BALANCE_T / c) for c in counts],
                "kept": pa.array(kept, pa.int64()),
            }
        ),
        folder / "entry_counts.parquet",
    )
