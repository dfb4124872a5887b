import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import fsio
from curation.runner import ShardContext, ShardTask, run_stage, shard_seed
from curation.stats import read_stage_records, summarize


def write_inputs(folder: Path, n: int) -> list[ShardTask]:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for i in range(n):
        path = folder / f"in-{i:03d}.txt"
        path.write_text("\n".join(f"row {i}-{j}" for j in range(5 + i)))
        tasks.append(ShardTask(f"{i:05d}", (str(path),)))
    return tasks


class CountingStage:
    """Reads text lines, keeps a seeded random half, writes Parquet. Can crash or reject input."""

    def __init__(self, crash_flag: str | None = None, crash_shard: str | None = None):
        self.crash_flag = crash_flag
        self.crash_shard = crash_shard

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        lines = fsio.read_bytes(task.inputs[0]).decode().splitlines()
        if any(line.startswith("CORRUPT") for line in lines):
            raise ValueError(f"{task.inputs[0]}: line 1 is not a row")
        ctx.stats.rows_in = len(lines)
        keep = ctx.rng.random(len(lines)) < 0.5
        kept = [line for line, k in zip(lines, keep) if k]
        ctx.stats.drop("coin_flip", len(lines) - len(kept))
        ctx.stats.rows_out = len(kept)
        if task.shard_id == self.crash_shard and not os.path.exists(self.crash_flag):
            Path(self.crash_flag).touch()
            with ctx.open_output(f"{task.shard_id}.parquet") as handle:
                handle.write(b"PAR1 half written")
                os._exit(1)  # the worker dies mid-write, like a killed job
        ctx.write_parquet(f"{task.shard_id}.parquet", pa.table({"line": kept}))


def output_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


def test_shard_seed_depends_on_run_seed_and_shard():
    assert shard_seed(0, "00001") == shard_seed(0, "00001")
    assert len({shard_seed(0, "00001"), shard_seed(1, "00001"), shard_seed(0, "00002")}) == 3


def test_killed_shard_rerun_gives_identical_output(tmp_path, ray_session):
    tasks = write_inputs(tmp_path / "in", 6)
    reference = tmp_path / "reference"
    assert run_stage("count", CountingStage(), tasks, str(reference), seed=7, progress=False).ok

    crashed = tmp_path / "crashed"
    stage = CountingStage(crash_flag=str(tmp_path / "crashed-once"), crash_shard="00003")
    first = run_stage("count", stage, tasks, str(crashed), seed=7, max_retries=0, progress=False)
    assert [f["shard"] for f in first.failed] == ["00003"]
    assert "00003.parquet" not in output_bytes(crashed)

    second = run_stage("count", stage, tasks, str(crashed), seed=7, progress=False)
    assert second.ok and sorted(second.skipped) == ["00000", "00001", "00002", "00004", "00005"]
    assert [r["shard"] for r in second.completed] == ["00003"]
    assert output_bytes(crashed) == output_bytes(reference)
    assert not [p for p in crashed.rglob("*") if fsio.TMP_MARK in p.name]
    assert not (crashed / "_errors" / "count" / "00003.json").exists()


def test_ray_retries_a_worker_that_died(tmp_path, ray_session):
    tasks = write_inputs(tmp_path / "in", 3)
    stage = CountingStage(crash_flag=str(tmp_path / "flag"), crash_shard="00001")
    report = run_stage(
        "count", stage, tasks, str(tmp_path / "out"), seed=1, max_retries=2, progress=False
    )
    assert report.ok and len(report.completed) == 3
    reference = run_stage(
        "count",
        CountingStage(),
        tasks,
        str(tmp_path / "ref"),
        seed=1,
        use_ray=False,
        progress=False,
    )
    assert reference.ok
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "ref")


def test_corrupt_shard_is_reported_and_others_finish(tmp_path, ray_session):
    tasks = write_inputs(tmp_path / "in", 4)
    Path(tasks[2].inputs[0]).write_text("CORRUPT bytes\n")
    out = tmp_path / "out"
    report = run_stage("count", CountingStage(), tasks, str(out), progress=False)
    assert [f["shard"] for f in report.failed] == ["00002"]
    failure = report.failed[0]
    assert failure["inputs"] == [tasks[2].inputs[0]]
    assert "is not a row" in failure["message"] and tasks[2].inputs[0] in report.describe()
    recorded = json.loads((out / "_errors" / "count" / "00002.json").read_text())
    assert recorded["error_type"] == "ValueError"
    assert sorted(output_bytes(out)) == ["00000.parquet", "00001.parquet", "00003.parquet"]


def test_stats_records_merge_into_one_table(tmp_path):
    tasks = write_inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    run_stage("count", CountingStage(), tasks, str(out), seed=3, use_ray=False, progress=False)
    records = read_stage_records(str(out))
    assert len(records) == 3 and {r["stage"] for r in records} == {"count"}
    row = summarize(records).to_pylist()[0]
    assert row["rows_in"] == 5 + 6 + 7
    kept = sum(pq.read_table(p).num_rows for p in out.glob("*.parquet"))
    assert row["rows_out"] == kept
    assert row["drops"] == [{"key": "coin_flip", "count": row["rows_in"] - kept}]


def test_duplicate_shard_ids_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        run_stage(
            "count",
            CountingStage(),
            [ShardTask("a"), ShardTask("a")],
            str(tmp_path),
            use_ray=False,
            progress=False,
        )


def test_one_stage_in_two_folders_is_summarised_per_folder(tmp_path):
    """A run that scores its pool twice: the latest folder keeps the bare stage name."""
    for folder, start, rows in (("pool/first", 100.0, 5), ("pool/second", 200.0, 7)):
        fsio.write_json(
            str(tmp_path / folder / "_stats" / "score" / "00000.json"),
            {
                "stage": "score",
                "shard": "00000",
                "rows_in": rows,
                "rows_out": rows,
                "started_at": start,
                "finished_at": start + 1.0,
                "wall_seconds": 1.0,
            },
        )
    records = read_stage_records(str(tmp_path))
    assert sorted(r["folder"] for r in records) == ["pool/first", "pool/second"]
    rows = {row["stage"]: row for row in summarize(records).to_pylist()}
    assert rows["score"]["rows_in"] == 7 and rows["score"]["wall_seconds"] == 1.0
    assert rows["score (pool/first)"]["rows_in"] == 5
