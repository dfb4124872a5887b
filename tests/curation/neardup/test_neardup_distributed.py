"""The distributed near-dup stage against planted truth and against the exact all-in-one method,
on synthetic scored pools (tests/curation/neardup/synthetic_pool.py)."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_pool import write_synthetic_pool

import curation.stages.neardup as neardup_stage
from curation.neardup.evalset import EvalReference
from curation.neardup.exact import decide_duplicates, load_pool_embeddings
from curation.neardup.rows import cluster_id, keep_keys, unit_rows
from curation.stages.neardup import NeardupConfig, run
from curation.stages.score import pool_tasks

ROOT = Path(__file__).resolve().parents[3]


def bridge_two_groups(pool: Path) -> tuple[int, int]:
    """Give a member of one planted group the sha256 of a member of another group in another
    shard: the two groups, found by embedding in different clusters, must end as ONE group."""
    first = pq.read_table(pool / "00000.parquet")
    last = pq.read_table(pool / "00002.parquet")
    a = next(i for i, g in enumerate(first["planted_group"].to_pylist()) if g is not None)
    group_a = first["planted_group"][a].as_py()
    b = next(
        i for i, g in enumerate(last["planted_group"].to_pylist()) if g is not None and g != group_a
    )
    sha = last["sha256"].to_pylist()
    sha[b] = first["sha256"][a].as_py()
    index = last.schema.get_field_index("sha256")
    pq.write_table(last.set_column(index, "sha256", pa.array(sha)), pool / "00002.parquet")
    return group_a, last["planted_group"][b].as_py()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    made = write_synthetic_pool(
        root, 6000, shard_rows=2000, planted_fraction=0.15, max_group=120, seed=3
    )
    bridged = bridge_two_groups(made.pool)
    return made, bridged


def contract(out: Path, pool: Path) -> pa.Table:
    tables = []
    for task in pool_tasks(str(pool)):
        table = pq.read_table(out / f"{task.shard_id}.parquet")
        tables.append(table.append_column("shard", pa.array([task.shard_id] * table.num_rows)))
    return pa.concat_tables(tables)


def exact_decisions(pool: Path) -> pa.Table:
    tasks = pool_tasks(str(pool))
    loaded = load_pool_embeddings(tasks, str(pool / "curation" / "score"), "tiny")
    return decide_duplicates(loaded, NeardupConfig(str(pool), use_embeddings=True).rule(), None)[0]


def same_groups(ours: np.ndarray, exact: np.ndarray) -> bool:
    """The two labellings put the same rows together (-1 = in no group)."""
    if not np.array_equal(ours >= 0, exact >= 0):
        return False
    pairs = {(a, b) for a, b in zip(ours[ours >= 0], exact[exact >= 0])}
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def run_and_check(made, out: Path, **settings) -> tuple[pa.Table, dict]:
    reports = run(NeardupConfig(str(made.pool), str(out), **settings))
    assert all(r.ok for r in reports)
    return contract(out, made.pool), reports[-1].summary


def test_planted_groups_across_shards_are_found_and_keep_the_rules_row(
    synthetic, tmp_path, ray_session
):
    made, (group_a, group_b) = synthetic
    ours, summary = run_and_check(made, tmp_path / "out")
    truth = pa.concat_tables(
        [
            pq.read_table(
                made.pool / f"{s}.parquet", columns=["uid", "planted_group", "planted_kind"]
            )
            for s in made.shards
        ]
    ).to_pandas()
    scores = pa.concat_tables(
        [pq.read_table(made.scores / f"{s}.parquet") for s in made.shards]
    ).to_pandas()
    table = ours.to_pandas().merge(truth, on="uid").merge(scores, on="uid")
    table.loc[table.planted_group == group_b, "planted_group"] = group_a  # bridged by sha256
    planted = table[table.planted_group.notna()]
    assert set(planted.planted_kind) == {"exact", "reencode", "resize", "crop"}
    assert (planted.dup_cluster >= 0).all()  # every planted copy, crops included, is found
    assert planted.groupby("planted_group").shard.nunique().max() == 3  # groups span shards
    for group, members in planted.groupby("planted_group"):
        assert members.dup_cluster.nunique() == 1, f"planted group {group} split"
        keys = keep_keys(members["clip_score_tiny"].to_numpy(), members.uid.tolist())
        rule_uid = members.uid.iloc[int(np.argmin(keys))]
        assert members[members.keep_dedup].uid.tolist() == [rule_uid]
        assert members.dup_cluster.iloc[0] == cluster_id(rule_uid)
    assert not table[table.planted_group.isna()].dup_cluster.ge(0).any()
    assert summary["clusters"] == planted.planted_group.nunique()
    assert summary["pairs"]["sha256"] >= 1

    exact = exact_decisions(made.pool)
    assert ours["uid"].to_pylist() == exact["uid"].to_pylist()
    assert same_groups(ours["dup_cluster"].to_numpy(), exact["dup_cluster"].to_numpy())
    assert ours["keep_dedup"].to_pylist() == exact["keep_dedup"].to_pylist()


def test_a_cluster_above_max_cluster_rows_is_split_again(synthetic, tmp_path, ray_session):
    """Also with the sha256 and group passes hash-partitioned (messages cross partitions)."""
    made, _ = synthetic
    ours, summary = run_and_check(
        made, tmp_path / "out", max_cluster_rows=400, sample_rows=160, group_rows=700
    )
    partition = summary["partition"]
    assert partition["splits"] > 0 and partition["group_partitions"] > 1
    assert partition["largest_leaf"] <= 400 and partition["oversized_leaves"] == 0
    exact = exact_decisions(made.pool)
    assert same_groups(ours["dup_cluster"].to_numpy(), exact["dup_cluster"].to_numpy())
    assert ours["keep_dedup"].to_pylist() == exact["keep_dedup"].to_pylist()


def test_eval_contaminants_and_their_groups_are_removed(
    synthetic, tmp_path, ray_session, monkeypatch
):
    """The eval index reaches every shard task: a pool row near an eval image is contaminated
    (with the eval image's name), and so is every member of its duplicate group."""
    made, _ = synthetic
    sidecar = pq.read_table(made.pool / "00001.parquet").to_pandas()
    row = int(np.flatnonzero(sidecar.planted_kind.eq("reencode").to_numpy())[0])
    group = sidecar.planted_group[row]
    vector = unit_rows(np.load(made.scores / "00001.emb.npy")[row : row + 1])
    reference = EvalReference(
        ["shapes/test/0.tar:s0000"],
        ["no-such-sha"],
        vector,
        np.zeros((1, 432), np.float32),
        np.zeros(1),
    )
    monkeypatch.setattr(neardup_stage, "embed_eval_sets", lambda folders, spec: reference)
    ours, summary = run_and_check(
        made, tmp_path / "out", eval_sets=("unused",), eval_threshold=0.9999
    )
    truth = pa.concat_tables(
        [
            pq.read_table(made.pool / f"{s}.parquet", columns=["uid", "planted_group"])
            for s in made.shards
        ]
    ).to_pandas()
    table = ours.to_pandas().merge(truth, on="uid")
    members = table[table.planted_group == group]
    assert members.contaminated.all() and len(members) > 1
    assert not table[table.planted_group != group].contaminated.any()
    direct = members[members.nearest_eval.notna()]
    assert set(direct.nearest_eval) == {"shapes/test/0.tar:s0000"}
    assert summary["contaminated_direct"] == len(direct) >= 1
    assert summary["contaminated_via_cluster"] == len(members) - len(direct) >= 1


def file_digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("0*.parquet"))
    }


def test_a_killed_run_resumes_to_byte_identical_decisions(synthetic, tmp_path, ray_session):
    made, _ = synthetic
    settings = {"max_cluster_rows": 400, "sample_rows": 160, "group_rows": 700}
    run_and_check(made, tmp_path / "whole", **settings)
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "curation", "neardup", "--pool", str(made.pool)]
    command += ["--out", str(killed), "--max-cluster-rows", "400", "--sample-rows", "160"]
    command += ["--group-rows", "700"]
    command += ["--no-ray", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    markers = killed.glob("_work/*/_stats/neardup_pairs/*.json")
    deadline = time.time() + 300
    while process.poll() is None and not list(markers) and time.time() < deadline:
        time.sleep(0.2)
        markers = killed.glob("_work/*/_stats/neardup_pairs/*.json")
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(killed.glob("0*.parquet"))
    run_and_check(made, killed, **settings)
    assert file_digests(killed) == file_digests(tmp_path / "whole")
    assert len(file_digests(killed)) == 3
