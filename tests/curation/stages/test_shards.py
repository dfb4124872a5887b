import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "score"))
from planted_pool import build_planted_pool, random_tiny_weights, score_planted_pool

from curation.cli import main
from curation.stages.neardup import NeardupConfig
from curation.stages.neardup import run as run_neardup
from curation.stages.shards import build_training_shards

REQUIRE = ["balance", "score", "neardup"]


@pytest.fixture(scope="module")
def curated(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("shards")
    planted = build_planted_pool(root, per_shard=30)
    score_dir = score_planted_pool(planted, random_tiny_weights(root), top_fraction=0.8)
    reports = run_neardup(
        NeardupConfig(
            str(planted.pool),
            str(planted.pool / "curation" / "neardup"),
            score_dir,
            (str(planted.eval_dir),),
        )
    )
    assert all(r.ok for r in reports)
    train = root / "train"
    ok, record = build_training_shards(str(planted.pool), str(train), REQUIRE, 16, 96, seed=5)
    assert ok
    return planted, train, record


def expected_kept_uids(pool: Path) -> set[str]:
    kept = set()
    for sidecar in sorted(pool.glob("*.parquet")):
        shard = sidecar.stem
        rows = pq.read_table(sidecar).to_pandas()
        rows = rows[rows.status == "success"]
        score = pq.read_table(pool / "curation" / "score" / f"{shard}.parquet").to_pandas()
        dedup = pq.read_table(pool / "curation" / "neardup" / f"{shard}.parquet").to_pandas()
        keep = set(score[score.keep_score].uid) & set(
            dedup[dedup.keep_dedup & ~dedup.contaminated].uid
        )
        kept |= set(rows.uid) & keep
    return kept


def read_training_shards(train: Path) -> tuple[list[dict], list[dict]]:
    index = pa.concat_tables(
        [pq.read_table(p) for p in sorted(train.glob("*.parquet"))]
    ).to_pylist()
    samples = []
    for tar_path in sorted(train.glob("*.tar")):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as archive:
            for member in archive:
                key, _, extension = member.name.partition(".")
                members.setdefault(key, {})[extension] = archive.extractfile(member).read()
        samples += [{"key": key, **parts} for key, parts in members.items()]
    return index, samples


def shard_bytes(train: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(train.iterdir()) if p.suffix in (".tar", ".parquet")
    }


def test_training_shards_hold_exactly_the_kept_uids(curated):
    planted, train, record = curated
    index, samples = read_training_shards(train)
    uids = [row["uid"] for row in index]
    assert len(uids) == len(set(uids)) == record["kept"]
    assert set(uids) == expected_kept_uids(planted.pool)
    assert sorted(json.loads(s["json"])["uid"] for s in samples) == sorted(uids)
    assert record["not_applied"] == ["balance"] and record["applied"] == ["score", "neardup"]


def test_no_eval_image_and_no_second_copy_reaches_training(curated):
    planted, train, _record = curated
    truth = planted.truth.to_pandas().set_index("uid")
    index, _ = read_training_shards(train)
    rows = truth.loc[[row["uid"] for row in index]]
    assert rows.eval_name.isna().all()
    assert rows.dup_group.dropna().is_unique


def test_samples_are_complete_resized_and_shuffled(curated):
    _planted, train, _record = curated
    index, samples = read_training_shards(train)
    for sample in samples:
        assert {"jpg", "txt", "json"} <= set(sample)
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert min(image.size) <= 96
        assert sample["txt"].decode() == json.loads(sample["json"])["text"]
    assert all(len(s) <= 16 for s in _group_by_shard(index).values())
    source_order = [row["source_key"] for row in index]
    assert source_order != sorted(source_order)


def _group_by_shard(index: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in index:
        groups.setdefault(row["key"][:5], []).append(row)
    return groups


def test_lost_outputs_are_rebuilt_identically_and_other_settings_are_refused(curated, tmp_path):
    planted, train, _record = curated
    copy = tmp_path / "train"
    assert build_training_shards(str(planted.pool), str(copy), REQUIRE, 16, 96, seed=5)[0]
    reference = shard_bytes(copy)
    assert reference == shard_bytes(train)
    # As if killed: one output shard and its marker gone, plus a half-written temporary.
    (copy / "00001.tar").unlink()
    (copy / "_stats" / "shards" / "00001.json").unlink()
    (copy / "00002.tar.tmp-deadbeef").write_bytes(b"half")
    assert build_training_shards(str(planted.pool), str(copy), REQUIRE, 16, 96, seed=5)[0]
    assert shard_bytes(copy) == reference
    with pytest.raises(SystemExit, match="planned from other inputs"):
        build_training_shards(str(planted.pool), str(copy), REQUIRE, 16, 96, seed=6)


def test_keep_source_size_copies_the_pool_jpegs(curated, tmp_path):
    planted, _train, _record = curated
    out = tmp_path / "naflex"
    assert (
        main(
            [
                "shards",
                "--pool",
                str(planted.pool),
                "--out",
                str(out),
                "--keep-source-size",
                "--samples-per-shard",
                "50",
                "--require",
                "score",
            ]
        )
        == 0
    )
    index, _ = read_training_shards(out)
    pool_sha = {}
    for sidecar in planted.pool.glob("*.parquet"):
        table = pq.read_table(sidecar)
        pool_sha.update(zip(table["uid"].to_pylist(), table["sha256"].to_pylist()))
    assert all(row["sha256"] == pool_sha[row["uid"]] for row in index)


# Runs the shards CLI in a child process that SIGKILLs itself once the write stage has finished
# its first two output shards: a deterministic point mid-stage, whatever the machine's speed.
KILL_MID_WRITE = """
import os, signal, sys
import curation.stages.shards as shards
real_run_stage = shards.run_stage
def run_stage(stage, fn, tasks, out, **kwargs):
    if stage != "shards":
        return real_run_stage(stage, fn, tasks, out, **kwargs)
    real_run_stage(stage, fn, tasks[:2], out, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
shards.run_stage = run_stage
from curation.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_killed_process_resumes_to_identical_shards(curated, tmp_path):
    planted, train, _record = curated
    out = tmp_path / "killed"
    args = [
        "shards",
        "--pool",
        str(planted.pool),
        "--out",
        str(out),
        "--samples-per-shard",
        "16",
        "--image-size",
        "96",
        "--seed",
        "5",
    ]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_MID_WRITE, *args], check=False, capture_output=True, timeout=400
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert len(list((out / "_stats" / "shards").iterdir())) == 2
    assert (out / "_spill").is_dir()  # killed before the spill buffer was cleaned up
    resumed = subprocess.run(
        [sys.executable, "-m", "curation", *args], check=False, capture_output=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    total = len(list(train.glob("*.tar")))
    assert f"shards: {total - 2} shards done, 2 already done, 0 failed" in resumed.stdout.decode()
    assert shard_bytes(out) == shard_bytes(train)
    assert not (out / "_spill").exists()


@pytest.mark.slow
def test_mini_common_crawl_curation_drops_dups_and_eval_images(
    minicc_world, minicc_server, tmp_path, ray_session
):
    """extract -> dedup -> download -> score -> neardup -> shards on the session's tiny world."""
    from curation.download.fetcher import FetchConfig
    from curation.download.http_exchange import Timeouts
    from curation.download.imaging import ImageOptions
    from curation.stages import dedup, extract
    from curation.stages.download import DownloadConfig, download_pool

    world = json.loads((minicc_world / "world.json").read_text())
    warcs = sorted(str(p) for p in minicc_world.glob("crawl-data/*/segments/*/warc/*.warc.gz"))
    assert extract.run(warcs, str(tmp_path / "candidates"), use_ray=False, progress=False).ok
    assert all(
        r.ok
        for r in dedup.run(
            str(tmp_path / "candidates"),
            str(tmp_path / "dedup"),
            buckets=2,
            use_ray=False,
            progress=False,
        )
        if r is not None
    )
    config = DownloadConfig(
        FetchConfig(
            user_agent_token=world["robots"]["agent_token"],
            allow_networks=(world["allowed_cidr"],),
            timeouts=Timeouts(connect_s=2.0, read_s=2.0, total_s=8.0),
            retries=2,
        ),
        ImageOptions(256, "keep_ratio_largest"),
        threads=16,
    )
    pool = tmp_path / "pool"
    assert all(
        r.ok
        for r in download_pool(
            [str(tmp_path / "dedup")], str(pool), config, samples_per_shard=200, progress=False
        )
    )
    weights = random_tiny_weights(tmp_path)
    args = ["--pool", str(pool), "--model", "tiny-clip", "--weights", str(weights)]
    assert main(["score", *args, "--top-fraction", "0.9"]) == 0
    assert main(["neardup", "--pool", str(pool), "--world", str(minicc_world)]) == 0
    train = tmp_path / "train"
    assert (
        main(["shards", "--pool", str(pool), "--out", str(train), "--samples-per-shard", "32"]) == 0
    )

    sidecars = pa.concat_tables(
        [pq.read_table(p, columns=["uid", "url", "status"]) for p in sorted(pool.glob("*.parquet"))]
    )
    decisions = pa.concat_tables(
        [pq.read_table(p) for p in sorted((pool / "curation" / "neardup").glob("0*.parquet"))]
    )
    truth = pq.read_table(
        minicc_world / "truth_images.parquet", columns=["url", "dup_group", "is_eval_contaminant"]
    ).to_pandas()
    merged = (
        decisions.to_pandas()
        .merge(sidecars.to_pandas(), on="uid")
        .merge(truth, on="url", how="left")
    )
    removed = merged[~merged.keep_dedup]
    in_groups = merged[merged.dup_group.notna()]
    kept_per_group = in_groups.groupby("dup_group").keep_dedup.sum()
    groups = kept_per_group[in_groups.groupby("dup_group").size() > 1]
    precision = (removed.dup_group.map(kept_per_group) >= 1).mean()
    recall = (groups == 1).mean()
    print(
        f"mini CC dup removal: precision={precision:.3f} recall={recall:.3f} over {len(groups)} groups"
    )
    assert precision == 1.0
    assert recall >= 0.75  # crops (5% of the picture cut) stay below the pixel threshold
    contaminants = merged[merged.is_eval_contaminant.fillna(False).astype(bool)]
    assert len(contaminants) and contaminants.contaminated.all()
    index, _samples = read_training_shards(train)
    trained = {row["uid"] for row in index}
    assert not trained & set(contaminants.uid)
    assert trained == expected_kept_uids(pool)
