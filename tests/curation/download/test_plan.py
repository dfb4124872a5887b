import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.download.plan import (
    DownloadPlan,
    InputSlice,
    make_plan,
    read_slice,
    save_or_check_plan,
)


def write_candidates(path, start: int, count: int, row_group_size: int = 4) -> str:
    urls = [f"http://127.0.0.1/{i}.jpg" for i in range(start, start + count)]
    table = pa.table(
        {
            "uid": [f"{i:032x}" for i in range(start, start + count)],
            "url": urls,
            "text": [f"caption {i}" for i in range(start, start + count)],
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def test_rows_are_cut_into_fixed_size_shards_across_files(tmp_path):
    write_candidates(tmp_path / "b.parquet", 7, 5)
    write_candidates(tmp_path / "a.parquet", 0, 7)
    plan = make_plan([str(tmp_path)], samples_per_shard=4)
    shards = plan.shards()
    assert list(shards) == ["00000", "00001", "00002"]
    a, b = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    assert shards["00001"] == (InputSlice(a, 4, 7), InputSlice(b, 0, 1))
    assert shards["00002"] == (InputSlice(b, 1, 5),)
    urls = [
        url
        for pieces in shards.values()
        for piece in pieces
        for url in read_slice(piece)["url"].to_pylist()
    ]
    assert urls == [f"http://127.0.0.1/{i}.jpg" for i in range(12)]


def test_read_slice_spans_row_groups(tmp_path):
    path = write_candidates(tmp_path / "c.parquet", 0, 20, row_group_size=3)
    assert read_slice(InputSlice(path, 5, 11))["text"].to_pylist() == [
        f"caption {i}" for i in range(5, 11)
    ]


def test_a_pool_refuses_a_plan_from_other_inputs(tmp_path):
    write_candidates(tmp_path / "a.parquet", 0, 6)
    pool = str(tmp_path / "pool")
    save_or_check_plan(pool, make_plan([str(tmp_path / "a.parquet")], 4))
    save_or_check_plan(pool, make_plan([str(tmp_path / "a.parquet")], 4))  # same plan: fine
    with pytest.raises(ValueError, match="other inputs"):
        save_or_check_plan(pool, make_plan([str(tmp_path / "a.parquet")], 5))


def test_bad_inputs_fail_fast_naming_the_file(tmp_path):
    pq.write_table(pa.table({"link": ["x"]}), tmp_path / "wrong.parquet")
    with pytest.raises(ValueError, match="wrong.parquet.*missing column"):
        make_plan([str(tmp_path / "wrong.parquet")], 4)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="junk.parquet"):
        make_plan([str(tmp_path / "junk.parquet")], 4)
    with pytest.raises(ValueError, match="no candidate"):
        make_plan([str(tmp_path / "nothing-*.parquet")], 4)
    with pytest.raises(ValueError, match="samples-per-shard"):
        make_plan([str(tmp_path / "wrong.parquet")], 20_000)


def test_plan_round_trips_through_json():
    plan = DownloadPlan((("a", 3), ("b", 9)), 5)
    assert DownloadPlan.from_json(plan.to_json()) == plan
