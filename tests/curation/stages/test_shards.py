import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "score"))
from planted_pool import build_planted_pool, random_tiny_weights, score_planted_pool
from tests_support import mini_web_download_config

sys.path.insert(0, str(Path(__file__).parents[3] / "benchmarks"))
from shards_shuffle import write_synthetic_pool

from curation import fsio
from curation.cli import main
from curation.shuffle import ShufflePlan
from curation.stages.common import RunOptions
from curation.stages.neardup import NeardupConfig
from curation.stages.neardup import run as run_neardup
from curation.stages.shards import ShardsConfig, run

REQUIRE = ("balance", "score", "neardup")


def build_training_shards(pool: Path, out: Path, seed: int = 5, **settings) -> tuple[bool, dict]:
    config = ShardsConfig(
        str(pool), str(out), **{"samples_per_shard": 16, "image_size": 96, **settings}
    )
    reports = run(config, RunOptions(seed=seed, progress=False))
    return all(report.ok for report in reports), reports[-1].summary


@pytest.fixture(scope="module")
def curated(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("shards")
    planted = build_planted_pool(root, per_shard=30)
    score_dir = score_planted_pool(
        planted, random_tiny_weights(root), top_fraction=0.8, use_ray=False
    )
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
    ok, record = build_training_shards(planted.pool, train, require=REQUIRE)
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
    """Every file a training run reads: the shards, their sidecars and sizes.json."""
    return {
        p.name: p.read_bytes()
        for p in sorted(train.iterdir())
        if p.suffix in (".tar", ".parquet") or p.name == "sizes.json"
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
    _planted, train, record = curated
    index, samples = read_training_shards(train)
    for sample in samples:
        assert {"jpg", "txt", "json"} <= set(sample)
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert min(image.size) <= 96
        metadata = json.loads(sample["json"])
        assert sample["txt"].decode() == metadata["text"]
        assert metadata["sha256"] == hashlib.sha256(sample["jpg"]).hexdigest()
    assert {row["status"] for row in index} == {"success"}
    # Hash routing: ceil(kept / 16) shards whose sizes vary around kept / shards.
    assert len(_group_by_shard(index)) == record["out_shards"] == -(-record["kept"] // 16)
    source_order = [row["source_key"] for row in index]
    assert source_order != sorted(source_order)


def test_sizes_json_is_what_open_clip_counts(curated):
    from open_clip_train.data import get_dataset_size

    _planted, train, record = curated
    _index, samples = read_training_shards(train)
    per_tar = {
        p.name: len({m.name.partition(".")[0] for m in tarfile.open(p)})
        for p in sorted(train.glob("*.tar"))
    }
    assert json.loads((train / "sizes.json").read_text()) == per_tar
    last = f"{len(per_tar) - 1:05d}"
    total, shards = get_dataset_size(f"{train}/{{00000..{last}}}.tar")
    assert (total, shards) == (record["kept"], len(per_tar)) == (len(samples), record["out_shards"])


def _group_by_shard(index: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in index:
        groups.setdefault(row["key"][:5], []).append(row)
    return groups


def test_open_clip_webdataset_loader_trains_on_the_shards_without_a_sample_count(curated):
    """open_clip_train's own training pipeline, with no --train-num-samples: it takes the size
    from sizes.json and decodes every sample of an epoch."""
    import argparse

    import torch
    from open_clip_train.data import get_wds_dataset

    _planted, train, record = curated
    last = f"{record['out_shards'] - 1:05d}"
    args = argparse.Namespace(
        train_data=f"{train}/{{00000..{last}}}.tar",
        train_num_samples=None,
        train_data_upsampling_factors=None,
        dataset_resampled=False,
        seed=0,
        batch_size=4,
        workers=0,
        world_size=1,
    )

    def preprocess(image):
        return torch.tensor(list(image.size))

    data = get_wds_dataset(args, preprocess, is_train=True, tokenizer=lambda t: [len(t)])
    assert data.dataloader.num_samples == -(-record["kept"] // 4) * 4
    seen = sum(len(images) for images, _texts in data.dataloader)
    assert seen == data.dataloader.num_samples


# A SigLIP-style open_clip model small enough to train an epoch on a CPU in seconds: ViT and
# text towers of width 32, open_clip's own BPE tokenizer (its vocabulary size is fixed).
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 1,
    },
}


def test_open_clip_train_main_trains_on_the_shards_without_a_sample_count(curated, tmp_path):
    """open_clip's own trainer, run the way its README runs it (`python -m open_clip_train.main`)
    with no --train-num-samples: it reads the epoch size from sizes.json and trains one epoch."""
    _planted, train, record = curated
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP}))
    batch = 8
    last = f"{record['out_shards'] - 1:05d}"
    # Offline: no pretrained weights, no reporting, nothing that could reach a hub.
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "OMP_NUM_THREADS": "1",
    }
    logs = tmp_path / "logs"
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "open_clip_train.main",
            "--train-data",
            f"{train}/{{00000..{last}}}.tar",
            "--dataset-type",
            "webdataset",
            "--model",
            f"local-dir:{model_dir}",
            "--siglip",
            "--batch-size",
            str(batch),
            "--epochs",
            "1",
            "--warmup",
            "1",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--log-every-n-steps",
            "1",
            "--logs",
            str(logs),
            "--name",
            "run",
            "--report-to",
            "",
            "--seed",
            "0",
        ],
        env=env,
        cwd=tmp_path,
        check=False,
        capture_output=True,
        timeout=300,
    )
    log = (logs / "run" / "out.log").read_text() if (logs / "run" / "out.log").exists() else ""
    assert trained.returncode == 0, (trained.stderr.decode() + log)[-3000:]
    assert "train_num_samples: None" in (logs / "run" / "params.txt").read_text()
    # The epoch size is sizes.json's total (the kept samples) rounded up to whole batches.
    steps = -(-record["kept"] // batch)
    progress = re.findall(
        r"Train Epoch: 0 \[\s*(\d+)/(\d+) \((\d+)%\)\] .* Contrastive_loss: (\S+)", log
    )
    assert {int(total) for _done, total, _pct, _loss in progress} == {steps * batch}, log
    assert int(progress[-1][0]) == steps * batch and progress[-1][2] == "100"
    assert all(math.isfinite(float(loss)) for *_, loss in progress)
    # Every batch was an optimizer step: AdamW's step count is in the epoch's checkpoint.
    import torch

    checkpoint = torch.load(logs / "run" / "checkpoints" / "epoch_1.pt", weights_only=False)
    assert checkpoint["epoch"] == 1
    assert {int(s["step"]) for s in checkpoint["optimizer"]["state"].values()} == {steps}


def test_lost_outputs_are_rebuilt_identically_and_other_settings_are_refused(curated, tmp_path):
    planted, train, _record = curated
    copy = tmp_path / "train"
    assert build_training_shards(planted.pool, copy, require=REQUIRE)[0]
    reference = shard_bytes(copy)
    assert reference == shard_bytes(train)
    assert not (copy / "_shuffle").exists()
    # As if killed: one output shard and its marker gone, plus a half-written temporary.
    (copy / "00001.tar").unlink()
    (copy / "_stats" / "shards" / "00001.json").unlink()
    (copy / "00002.tar.tmp-deadbeef").write_bytes(b"half")
    assert build_training_shards(planted.pool, copy, require=REQUIRE)[0]
    assert shard_bytes(copy) == reference
    with pytest.raises(fsio.PlanMismatchError, match="planned from other inputs"):
        build_training_shards(planted.pool, copy, seed=6, require=REQUIRE)


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


# Runs the shards CLI in a child process that SIGKILLs itself once the pass named by its first
# argument has finished its first two tasks: a deterministic point mid-pass, whatever the
# machine's speed.
KILL_MID_PASS = """
import os, signal, sys
import curation.stages.shards as shards
kill_stage = sys.argv.pop(1)
real_run_stage = shards.run_stage
def run_stage(stage, fn, tasks, out, **kwargs):
    if stage != kill_stage:
        return real_run_stage(stage, fn, tasks, out, **kwargs)
    real_run_stage(stage, fn, tasks[:2], out, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
shards.run_stage = run_stage
from curation.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_and_resume(stage: str, args: list[str], env: dict[str, str], check_killed=None) -> str:
    """Run the CLI killed after two tasks of `stage`, then again; returns the re-run's stdout.
    Both runs join the Ray instance `env` names; `check_killed(out)` looks at the folder in
    between."""
    killed = subprocess.run(
        [sys.executable, "-c", KILL_MID_PASS, stage, *args],
        env=env,
        check=False,
        capture_output=True,
        timeout=400,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    out = Path(args[args.index("--out") + 1])
    assert len(list((out / "_stats" / stage).iterdir())) == 2
    assert (out / "_shuffle").is_dir()  # killed before the shuffle files were cleaned up
    if check_killed is not None:
        check_killed(out)
    resumed = subprocess.run(
        [sys.executable, "-m", "curation", *args],
        env=env,
        check=False,
        capture_output=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert not (out / "_shuffle").exists()
    return resumed.stdout.decode()


@pytest.mark.slow
def test_killed_process_resumes_to_identical_shards(curated, tmp_path, ray_session_env):
    planted, train, _record = curated
    out = tmp_path / "killed"
    args = ["shards", "--pool", str(planted.pool), "--out", str(out), "--samples-per-shard", "16"]
    stdout = kill_and_resume(
        "shards", [*args, "--image-size", "96", "--seed", "5"], ray_session_env
    )
    total = len(list(train.glob("*.tar")))
    assert f"shards: {total - 2} shards done, 2 already done, 0 failed" in stdout
    assert shard_bytes(out) == shard_bytes(train)


# A pool of 4,000 rows in 8 shards of 500 (8x8 JPEGs), cut into 8 output shards of about 500.
SYNTHETIC_ROWS, SYNTHETIC_PER_SHARD = 4000, 500


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("shuffle")
    write_synthetic_pool(root / "pool", SYNTHETIC_ROWS, SYNTHETIC_PER_SHARD)
    runs = {}
    for fan_in in (2, 64):
        out = root / f"train-fan{fan_in}"
        ok, record = build_training_shards(
            root / "pool", out, samples_per_shard=500, image_size=8, max_fan_in=fan_in
        )
        assert ok
        runs[fan_in] = (out, record)
    return root / "pool", runs


def test_shuffle_is_a_permutation_of_the_pool(synthetic):
    pool, runs = synthetic
    out, record = runs[2]
    index, samples = read_training_shards(out)
    pool_uids = pa.concat_tables([pq.read_table(p) for p in sorted(pool.glob("*.parquet"))])
    assert sorted(row["uid"] for row in index) == sorted(pool_uids["uid"].to_pylist())
    assert len(samples) == len(index) == record["kept"] == SYNTHETIC_ROWS
    assert record["out_shards"] == 8 and record["shuffle"]["levels"] == 3


def test_shuffle_output_does_not_depend_on_the_fan_in(synthetic):
    _pool, runs = synthetic
    assert shard_bytes(runs[2][0]) == shard_bytes(runs[64][0])
    assert runs[64][1]["shuffle"]["levels"] == 1


def test_output_shard_is_independent_of_the_input_position(synthetic):
    """Chi-square test of independence on the 8 input x 8 output shard table of 4,000 rows,
    and the rank correlation of input position and output position."""
    _pool, runs = synthetic
    index, _ = read_training_shards(runs[2][0])
    source = np.array([int(row["source_shard"]) for row in index])
    target = np.array([int(row["key"][:5]) for row in index])
    table = np.zeros((8, 8))
    np.add.at(table, (source, target), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi_square = ((table - expected) ** 2 / expected).sum()
    assert chi_square < 85.35  # chi2(49 dof) at p = 0.001 (scipy.stats.chi2.ppf(0.999, 49))
    input_position = np.array([int(row["source_key"]) for row in index])  # shard + row digits
    output_position = np.arange(len(index))  # the training order: shard after shard, in key order
    rho = np.corrcoef(np.argsort(np.argsort(input_position)), output_position)[0, 1]
    assert abs(rho) < 3 / np.sqrt(len(index))
    # Within one output shard the order is a shuffle too, not the pool's order.
    first = [int(row["source_key"]) for row in index if row["key"].startswith("00000")]
    assert first != sorted(first)


def test_no_task_reads_or_writes_more_files_than_the_fan_in(synthetic):
    _pool, runs = synthetic
    out, record = runs[2]
    plan = ShufflePlan(8, 8, 2)
    assert record["shuffle"] == plan.to_record()
    stages = ["shards_spill", "shards_shuffle2", "shards_shuffle3", "shards"]
    for stage in stages:
        markers = sorted((out / "_stats" / stage).glob("*.json"))
        assert markers
        for marker in markers:
            task = json.loads(marker.read_text())
            shuffle_inputs = [url for url in task["inputs"] if "_shuffle" in url]
            listed = fsio.expand(shuffle_inputs[0]) if shuffle_inputs else [""]
            shuffle_outputs = [name for name in task["outputs"] if "_shuffle" in name]
            assert len(listed) == task["extra"]["files_read"] <= 2, marker
            assert len(shuffle_outputs) <= 2 and task["extra"]["files_written"] <= 2, marker


@pytest.mark.parametrize(
    ("sources", "dests", "fan"),
    [(p, n, f) for p in (1, 2, 3, 7, 17) for n in (1, 2, 5, 9, 30) for f in (2, 3, 4)],
)
def test_every_shuffle_file_a_task_reads_was_written_and_fan_in_is_bounded(sources, dests, fan):
    plan = ShufflePlan(sources, dests, fan)
    written = {plan.file_name(1, r, s) for s in range(sources) for r in range(plan.ranges_at(1))}
    assert plan.ranges_at(1) <= fan
    for level in range(2, plan.levels + 1):
        made = set()
        for range_id in range(plan.ranges_at(level - 1)):
            for group, members in enumerate(plan.groups(level)):
                reads = {plan.file_name(level - 1, range_id, s) for s in members}
                assert len(reads) <= fan and reads <= written
                children = plan.children(range_id, level)
                assert len(children) <= fan
                made |= {plan.file_name(level, child, group) for child in children}
        written = made
    finals = plan.final_sources()
    assert len(finals) <= fan
    for dest in range(dests):
        assert {plan.file_name(plan.levels, dest, s) for s in finals} <= written
        assert plan.range_of(np.array([dest]), plan.levels)[0] == dest


@pytest.mark.slow
def test_killed_mid_shuffle_resumes_to_identical_shards(synthetic, tmp_path, ray_session_env):
    pool, runs = synthetic
    out = tmp_path / "killed"
    args = ["shards", "--pool", str(pool), "--out", str(out), "--samples-per-shard", "500"]
    stdout = kill_and_resume(
        "shards_shuffle2",
        [*args, "--image-size", "8", "--max-fan-in", "2", "--seed", "5"],
        ray_session_env,
    )
    # Level 2 merges 8 spill files per range, 2 at a time: 2 ranges x 4 groups = 8 tasks.
    assert "shards_shuffle2: 6 shards done, 2 already done, 0 failed" in stdout
    assert shard_bytes(out) == shard_bytes(runs[2][0])


@pytest.mark.slow
def test_spent_shuffle_levels_are_deleted_and_a_resume_does_not_need_them(
    synthetic, tmp_path, ray_session_env
):
    pool, runs = synthetic
    out = tmp_path / "killed"
    args = ["shards", "--pool", str(pool), "--out", str(out), "--samples-per-shard", "500"]

    def two_levels_on_disk(out: Path) -> None:
        # Killed inside level 3: level 2 is complete, so level 1 (the spill) is gone.
        assert sorted(p.name for p in (out / "_shuffle").iterdir()) == ["2", "3"]

    stdout = kill_and_resume(
        "shards_shuffle3",
        [*args, "--image-size", "8", "--max-fan-in", "2", "--seed", "5"],
        ray_session_env,
        two_levels_on_disk,
    )
    assert "shards_spill: 0 shards done, 8 already done, 0 failed" in stdout
    assert shard_bytes(out) == shard_bytes(runs[2][0])


@pytest.mark.slow
def test_mini_common_crawl_curation_drops_dups_and_eval_images(
    minicc_world, minicc_server, tmp_path, ray_session
):
    """extract -> dedup -> download -> score -> neardup -> shards on the session's tiny world.
    The score runs in this process (--no-ray): its Ray actors are test_score's subject, and
    starting them cost ~15 s here."""
    from curation.stages import dedup, download, extract
    from curation.stages.common import RunOptions

    world = json.loads((minicc_world / "world.json").read_text())
    warcs = sorted(str(p) for p in minicc_world.glob("crawl-data/*/segments/*/warc/*.warc.gz"))
    [extracted] = extract.run(
        extract.ExtractConfig(tuple(warcs), str(tmp_path / "candidates")),
        RunOptions(use_ray=False, progress=False),
    )
    assert extracted.ok
    assert all(
        r.ok
        for r in dedup.run(
            dedup.DedupConfig(str(tmp_path / "candidates"), str(tmp_path / "dedup"), buckets=2),
            RunOptions(use_ray=False, progress=False),
        )
    )
    pool = tmp_path / "pool"
    config = mini_web_download_config(world, str(tmp_path / "dedup"), str(pool), image_size=256)
    assert all(r.ok for r in download.run(config, RunOptions(progress=False)))
    weights = random_tiny_weights(tmp_path)
    args = ["--pool", str(pool), "--model", "tiny-clip", "--weights", str(weights)]
    assert main(["score", *args, "--top-fraction", "0.9", "--no-ray"]) == 0
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
        minicc_world / "truth_images.parquet",
        columns=["url", "dup_group", "is_eval_contaminant", "variant", "scene_id", "contrast_of"],
    ).to_pandas()
    merged = (
        decisions.to_pandas()
        .merge(sidecars.to_pandas(), on="uid")
        .merge(truth, on="url", how="left")
    )
    # Blank pictures and banners (flat tones, stripes) are near-copies of one another by design,
    # each in a dup group of its own: whether they go is no question of dup groups. A hard
    # negative (one shape's kind changed) may look a near-copy of its scene to a pixel signature
    # (on a plain background, with small shapes): a removal counts as right when the picture's
    # own group, or its look-alike's, keeps one.
    removed = merged[~merged.keep_dedup & ~merged.variant.isin(["blank", "banner"])]
    lookalike = dict(zip(merged.contrast_of.dropna(), merged.scene_id[merged.contrast_of.notna()]))
    lookalike.update({v: k for k, v in list(lookalike.items())})
    in_groups = merged[merged.dup_group.notna()]
    kept_per_group = in_groups.groupby("dup_group").keep_dedup.sum()
    groups = kept_per_group[in_groups.groupby("dup_group").size() > 1]
    partner_kept = removed.scene_id.map(lookalike).map(kept_per_group).fillna(0)
    precision = ((removed.dup_group.map(kept_per_group) + partner_kept) >= 1).mean()
    recall = (groups == 1).mean()
    print(
        f"mini CC dup removal: precision={precision:.3f} recall={recall:.3f} over {len(groups)} groups"
    )
    assert precision == 1.0
    # Crops (5% of the picture cut) stay below the pixel threshold. The tiny world has ~11
    # groups, so one group moves recall 9 points; generator 6's small world: 0.80 of 278 groups.
    assert recall >= 0.7
    contaminants = merged[merged.is_eval_contaminant.fillna(False).astype(bool)]
    assert len(contaminants) and contaminants.contaminated.all()
    index, _samples = read_training_shards(train)
    trained = {row["uid"] for row in index}
    assert not trained & set(contaminants.uid)
    assert trained == expected_kept_uids(pool)


@pytest.mark.parametrize(
    "flags",
    [["--max-fan-in", "1"], ["--samples-per-shard", "0"], ["--buffer-mb", "0"], ["--require", "x"]],
)
def test_bad_settings_exit_2_before_any_shard_runs(flags, tmp_path, capsys):
    out = tmp_path / "train"
    assert main(["shards", "--pool", str(tmp_path), "--out", str(out), *flags]) == 2
    assert "shards:" in capsys.readouterr().err
    assert not out.exists()


def test_shuffle_writer_keeps_its_buffer_within_the_budget(tmp_path):
    from curation.runner import ShardContext, ShardTask
    from curation.shuffle import ShuffleWriter

    schema = pa.schema([("dest", pa.int64()), ("payload", pa.binary())])
    ctx = ShardContext("test", ShardTask("x"), str(tmp_path), seed=0)
    names = {b: f"bucket{b}.parquet" for b in range(3)}
    rows = [{"dest": i % 2, "payload": bytes([i % 256]) * 1000} for i in range(300)]
    peak = 0
    with ShuffleWriter(
        ctx, names, schema, lambda t: t["dest"].to_numpy(), budget_bytes=20_000
    ) as writer:
        for start in range(0, len(rows), 4):
            writer.add(pa.Table.from_pylist(rows[start : start + 4], schema=schema))
            peak = max(peak, writer.queued)
    assert 0 < peak < 20_000 // 2  # the queue is written out once it holds half the budget
    files = {b: pq.ParquetFile(tmp_path / name) for b, name in names.items()}
    assert files[0].metadata.num_row_groups > 1 and files[2].metadata.num_rows == 0
    for bucket in (0, 1):
        got = files[bucket].read().to_pylist()
        assert got == [row for row in rows if row["dest"] == bucket]
