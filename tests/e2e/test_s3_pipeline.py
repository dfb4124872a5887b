"""The whole chain with every stage reading and writing s3:// on a real S3 server (moto, 127.0.0.1).

extract (Common Crawl layout uploaded to the bucket) → dedup → download (from the mini web) →
balance → score → neardup → shards, then the trainer reads the training shards from S3.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import s3fs

from curation.cli import main as curation
from curation.minicc.build import load_world


def s3_parquet_uids(
    fs: s3fs.S3FileSystem, folder: str, filter_column: str | None = None
) -> set[str]:
    uids: set[str] = set()
    for path in fs.glob(f"{folder}/[0-9]*.parquet"):
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        rows = table.to_pylist()
        uids |= {r["uid"] for r in rows if filter_column is None or r[filter_column]}
    return uids


@pytest.mark.slow
def test_crawl_curate_train_end_to_end_on_s3(
    minicc_world, minicc_server, s3_bucket, ray_session, tmp_path
):
    world = load_world(minicc_world)
    fs = s3fs.S3FileSystem()
    fs.put(
        str(minicc_world / "crawl-data"), f"{s3_bucket.removeprefix('s3://')}/cc/", recursive=True
    )
    run = f"{s3_bucket}/run"
    pool = f"{run}/pool"

    assert (
        curation(
            [
                "extract",
                "--snapshot",
                world["snapshot"],
                "--cc-root",
                f"{s3_bucket}/cc",
                "--out",
                f"{run}/candidates",
            ]
        )
        == 0
    )
    assert (
        curation(
            ["dedup", "--input", f"{run}/candidates", "--out", f"{run}/dedup", "--buckets", "4"]
        )
        == 0
    )
    assert (
        curation(
            [
                "download",
                "--input",
                f"{run}/dedup",
                "--out",
                pool,
                "--allow-network",
                world["allowed_cidr"],
                "--image-size",
                "64",
                "--samples-per-shard",
                "60",
                "--read-timeout",
                "3",
            ]
        )
        == 0
    )
    assert (
        curation(
            [
                "balance",
                "--input",
                pool,
                "--metadata",
                str(minicc_world),
                "--t",
                "50",
                "--texts-column",
                "texts",
            ]
        )
        == 0
    )
    weights = f"{s3_bucket}/models/tiny.safetensors"
    assert curation(["score", "--model", "tiny-clip", "--init-random-weights", weights]) == 0
    assert (
        curation(
            ["score", "--pool", pool, "--model", "tiny-clip", "--weights", weights, "--tag", "tiny"]
        )
        == 0
    )
    assert curation(["neardup", "--pool", pool, "--world", str(minicc_world)]) == 0
    assert (
        curation(
            [
                "shards",
                "--pool",
                pool,
                "--out",
                f"{run}/train",
                "--require",
                "balance,neardup",
                "--samples-per-shard",
                "50",
            ]
        )
        == 0
    )

    bucket_path = run.removeprefix("s3://")
    assert len(fs.glob(f"{bucket_path}/pool/*.tar")) >= 2
    kept = s3_parquet_uids(
        fs, f"{bucket_path}/pool/curation/balance", "keep_balance"
    ) & s3_parquet_uids(fs, f"{bucket_path}/pool/curation/neardup", "keep_dedup")
    contaminated = s3_parquet_uids(fs, f"{bucket_path}/pool/curation/neardup", "contaminated")
    kept -= contaminated
    assert kept and s3_parquet_uids(fs, f"{bucket_path}/train") == kept
    assert fs.glob(f"{bucket_path}/pool/_stats/download/*.json")

    from training.cli import main as training

    out = tmp_path / "train-run"
    assert (
        training(
            [
                "train",
                "--preset",
                "tiny",
                "--data",
                f"{run}/train/*.tar",
                "--out",
                str(out),
                "--steps",
                "2",
                "data.batch_size=8",
                "data.grounding_fraction=0",
            ]
        )
        == 0
    )
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s][-1] == 2
