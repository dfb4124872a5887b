"""The demo's step runner: an arm that trains beside the other steps (Steps.start / finish)."""

from __future__ import annotations

import sys
import time

import pytest

from curation.demo import Steps

PY = sys.executable


def test_an_arm_beside_the_steps_runs_its_commands_in_order_into_its_log(tmp_path):
    steps = Steps()
    log = tmp_path / "logs" / "arm.log"
    beside = steps.start(
        "arm",
        [
            [PY, "-c", "import time; time.sleep(0.5); print('trained')"],
            [PY, "-c", "print('evaluated')"],
        ],
        log,
    )
    steps.run("foreground", [PY, "-c", "import time; time.sleep(0.5)"])
    steps.finish(beside)
    assert log.read_text().split() == ["trained", "evaluated"]
    names = [name for name, _ in steps.rows]
    assert names == ["foreground", "arm"]
    # The two ran at once: the wall clock counts the arm once, not on top of the foreground step.
    assert steps.wall() < sum(seconds for _, seconds in steps.rows)
    assert "total (wall clock)" in steps.table()


def test_a_failing_arm_stops_the_demo_naming_its_command_and_log_and_skips_the_rest(tmp_path):
    steps = Steps()
    log = tmp_path / "arm.log"
    marker = tmp_path / "evaluated"
    beside = steps.start(
        "arm",
        [
            [PY, "-c", "import sys; print('boom'); sys.exit(3)"],
            [PY, "-c", f"open({str(marker)!r}, 'w')"],
        ],
        log,
    )
    with pytest.raises(SystemExit, match=r"demo step 'arm' failed .*exited 3.*arm\.log"):
        steps.finish(beside)
    assert "boom" in log.read_text() and not marker.exists()


def test_stopping_an_arm_terminates_its_command_and_starts_no_other(tmp_path):
    steps = Steps()
    marker = tmp_path / "second"
    beside = steps.start(
        "arm",
        [[PY, "-c", "import time; time.sleep(60)"], [PY, "-c", f"open({str(marker)!r}, 'w')"]],
        tmp_path / "arm.log",
    )
    while beside.process is None:
        time.sleep(0.05)
    started = time.perf_counter()
    beside.stop()
    assert time.perf_counter() - started < 10
    assert beside.process.poll() is not None and not marker.exists()
    assert not beside.thread.is_alive()


@pytest.mark.parametrize(
    ("jobs", "beside", "here"),
    [
        # Round 0's own work is ~1.25 trainings: two scorers fit beside it, a third comes here.
        (["s0", "s1"], ["s0", "s1"], []),
        (["s0", "s1", "s2"], ["s0", "s1"], ["s2"]),
        (["s0", "s1", "s2", "s3"], ["s0", "s1", "s3"], ["s2"]),
        ([], [], []),
    ],
)
def test_scorers_go_to_the_lane_that_frees_first(jobs, beside, here):
    from curation.demo import plan_lanes

    assert plan_lanes(jobs, head_start=1.25) == (beside, here)


def test_each_fold_scorer_trains_without_its_fold_and_the_exports_come_seed_by_seed(tmp_path):
    """fold_scorer_jobs: scorer (fold i, seed m) trains on round 0's rows outside fold i with
    `seed=m`, and the exports are listed seed-major, fold-minor (score --folds reads file J
    as fold J % folds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.demo import fold_scorer_jobs
    from curation.score.shard_scoring import crossfit_folds
    from training.data.tars import write_tar

    shards = tmp_path / "round0"
    shards.mkdir()
    uids = [f"u{i:03d}" for i in range(60)]
    write_tar(shards / "00000.tar", [(uid, {"jpg": b"x", "txt": b"t"}) for uid in uids])
    pq.write_table(pa.table({"uid": uids, "key": uids}), shards / "00000.parquet")
    jobs, exports = fold_scorer_jobs(tmp_path / "demo", shards, tmp_path / "world", 3, 7, 50, 2)
    home = tmp_path / "demo" / "scorer_folds" / "3_folds_50_steps"  # another split: other folders
    assert [name for name, _ in jobs] == [
        f"scorer of fold {fold}, seed {seed}" for seed in (0, 1) for fold in (0, 1, 2)
    ]
    assert exports == [
        home / f"run_{fold}_seed{seed}" / "open_clip" for seed in (0, 1) for fold in (0, 1, 2)
    ]
    folds = dict(zip(uids, crossfit_folds(uids, 3, 7)))
    for fold in range(3):
        kept = pq.read_table(home / f"shards_{fold}" / "00000.parquet")
        assert sorted(kept["uid"].to_pylist()) == [u for u in uids if folds[u] != fold]
    train, export = jobs[4][1]  # fold 1, seed 1
    assert train[train.index("--steps") + 1] == "50" and "seed=1" in train
    assert str(home / "shards_1" / "*.tar") in train
    assert export[-1] == str(exports[4])
