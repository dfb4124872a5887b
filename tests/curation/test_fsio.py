import pyarrow as pa
import pytest
import s3fs

from curation import fsio
from curation.runner import ShardContext, ShardTask, run_stage


def test_local_atomic_write_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with pytest.raises(RuntimeError), fsio.open_atomic(str(target)) as handle:
        handle.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []
    fsio.write_bytes(str(target), b"whole")
    assert target.read_bytes() == b"whole"


def test_expand_brace_ranges_and_globs(tmp_path):
    for i in range(3):
        (tmp_path / f"{i:05d}.tar").write_bytes(b"")
    assert fsio.expand(str(tmp_path / "{00000..00002}.tar")) == [
        str(tmp_path / f"{i:05d}.tar") for i in range(3)
    ]
    assert fsio.expand(str(tmp_path / "*.tar")) == sorted(str(p) for p in tmp_path.glob("*.tar"))


def test_s3_multipart_object_is_committed_whole(s3_bucket):
    url = f"{s3_bucket}/big/object.bin"
    payload = bytes(range(256)) * (12 * 4096)  # 12 MiB: several multipart parts
    with fsio.open_atomic(url) as handle:
        for start in range(0, len(payload), 1 << 20):
            handle.write(payload[start : start + (1 << 20)])
    assert fsio.read_bytes(url) == payload


def test_s3_failed_write_commits_nothing(s3_bucket):
    url = f"{s3_bucket}/failed/object.bin"
    with pytest.raises(RuntimeError), fsio.open_atomic(url) as handle:
        handle.write(b"x" * (7 << 20))
        raise RuntimeError("killed mid-upload")
    assert not fsio.exists(url)


class ParquetPerShard:
    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        values = ctx.rng.integers(0, 1000, size=10)
        ctx.stats.rows_in = ctx.stats.rows_out = len(values)
        ctx.write_parquet(f"{task.shard_id}.parquet", pa.table({"v": values}))


def test_stage_on_s3_writes_outputs_and_markers_and_resumes(s3_bucket, ray_session):
    out = f"{s3_bucket}/run"
    tasks = [ShardTask(f"{i:05d}") for i in range(4)]
    first = run_stage("numbers", ParquetPerShard(), tasks, out, seed=5, progress=False)
    assert first.ok and len(first.completed) == 4
    fs = s3fs.S3FileSystem()
    names = sorted(
        p.rsplit("/", 1)[1] for p in fs.ls(out.removeprefix("s3://")) if p.endswith(".parquet")
    )
    assert names == [f"{i:05d}.parquet" for i in range(4)]
    again = run_stage("numbers", ParquetPerShard(), tasks, out, seed=5, progress=False)
    assert sorted(again.skipped) == [t.shard_id for t in tasks] and not again.completed
