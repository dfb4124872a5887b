import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.metaclip.layout import (
    check_input_list,
    default_out_dir,
    invalidate_stale_passes,
    resolve_inputs,
)
from curation.stages.common import ConfigError
from curation.stats import stats_dir


def write(path, rows=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uid": [f"{path.stem}-{i}" for i in range(rows)]}), path)


def test_pool_folder_keeps_its_shard_ids_and_default_out(tmp_path):
    for shard in ("00000", "00001"):
        write(tmp_path / f"{shard}.parquet")
        (tmp_path / f"{shard}.tar").write_bytes(b"")
    inputs = resolve_inputs(str(tmp_path))
    assert inputs.is_pool
    assert [t.shard_id for t in inputs.tasks] == ["00000", "00001"]
    assert default_out_dir(inputs) == f"{tmp_path}/curation/balance"


def test_plain_dataset_uses_file_names_and_skips_own_outputs(tmp_path):
    write(tmp_path / "part-b.parquet")
    write(tmp_path / "part-a.parquet")
    write(tmp_path / "entry_counts.parquet")
    write(tmp_path / "_matches.parquet")
    inputs = resolve_inputs(str(tmp_path))
    assert not inputs.is_pool
    assert [t.shard_id for t in inputs.tasks] == ["part-a", "part-b"]
    with pytest.raises(ConfigError, match="--out is required"):
        default_out_dir(inputs)


def test_clashing_file_names_fall_back_to_indices(tmp_path):
    write(tmp_path / "x" / "data.parquet")
    write(tmp_path / "y" / "data.parquet")
    inputs = resolve_inputs(str(tmp_path / "*" / "data.parquet"))
    assert [t.shard_id for t in inputs.tasks] == ["00000", "00001"]


def test_no_input_files_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no Parquet files"):
        resolve_inputs(str(tmp_path))


def test_rerun_over_other_files_is_refused(tmp_path):
    write(tmp_path / "a" / "00000.parquet")
    write(tmp_path / "b" / "00000.parquet")
    check_input_list(str(tmp_path / "out"), resolve_inputs(str(tmp_path / "a")))
    check_input_list(str(tmp_path / "out"), resolve_inputs(str(tmp_path / "a")))
    with pytest.raises(ValueError, match="use a new --out"):
        check_input_list(str(tmp_path / "out"), resolve_inputs(str(tmp_path / "b")))


def test_changed_t_resets_only_sampling_and_changed_metadata_resets_both(tmp_path):
    out = str(tmp_path)
    passes = {"match": ["m"], "sample": ["s"]}

    def mark(stage):
        marker = tmp_path / "_stats" / stage / "00000.json"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("{}")

    def marked():
        return {s for s in ("m", "s") if (tmp_path / "_stats" / s / "00000.json").exists()}

    assert invalidate_stale_passes(out, {"metadata": "x"}, {"t": 1}, passes) == []
    mark("m"), mark("s")
    assert invalidate_stale_passes(out, {"metadata": "x"}, {"t": 1}, passes) == []
    assert invalidate_stale_passes(out, {"metadata": "x"}, {"t": 2}, passes) == ["s"]
    assert marked() == {"m"} and stats_dir(out, "m").endswith("_stats/m")
    mark("s")
    assert invalidate_stale_passes(out, {"metadata": "y"}, {"t": 2}, passes) == ["m", "s"]
    assert marked() == set()
