import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.data.grounding_mix import (
    MixConfigError,
    grounding_mix_shards,
    read_mix,
    record_source,
)
from training.data.shards import expand_shard_urls


def fake_shards(folder: Path, samples: list[int]) -> None:
    folder.mkdir(parents=True)
    for index, count in enumerate(samples):
        with tarfile.open(folder / f"{index:05d}.tar", "w") as archive:
            info = tarfile.TarInfo("x.json")
            archive.addfile(info, io.BytesIO(b""))
        pq.write_table(
            pa.table({"key": [f"k{i}" for i in range(count)]}), folder / f"{index:05d}.parquet"
        )


def test_repeats_and_quotas_become_the_shard_list_the_trainer_reads(tmp_path):
    fake_shards(tmp_path / "oi", [10, 10, 10, 10])
    fake_shards(tmp_path / "ref", [5, 5])
    fake_shards(tmp_path / "vg", [7, 7, 7])
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"""sources:
  openimages: {{shards: "{tmp_path}/oi/*.tar", repeat: 0.5}}
  refcoco: {{shards: "{tmp_path}/ref/*.tar", repeat: 3}}
  visualgenome: {{shards: "{tmp_path}/vg/*.tar", repeat: 1, max_samples: 8}}
""")
    shards = grounding_mix_shards(str(mix))
    names = [str(Path(s).relative_to(tmp_path)) for s in shards]
    assert names == (
        ["oi/00000.tar", "oi/00001.tar"]
        + ["ref/00000.tar", "ref/00001.tar"] * 3
        + ["vg/00000.tar", "vg/00001.tar"]
    )
    assert expand_shard_urls(shards) == shards  # the trainer keeps the repeats


def test_recording_a_source_keeps_the_repeat_and_quota_a_person_set(tmp_path):
    mix = tmp_path / "mix.json"
    record_source(str(mix), "grand", "/g/*.tar", 100, "lic")
    mix.write_text(mix.read_text().replace('"repeat": 1.0', '"repeat": 0.25, "max_samples": 50'))
    entry = record_source(str(mix), "grand", "/g2/*.tar", 50, "lic")
    assert (entry.shards, entry.repeat, entry.max_samples, entry.samples) == (
        "/g2/*.tar",
        0.25,
        50,
        50,
    )
    assert read_mix(str(mix))["grand"] == entry


@pytest.mark.parametrize(
    "body",
    [
        "sources: [1, 2]",
        "sources:\n  a: {repeat: 1}",
        "sources:\n  a: {shards: x, repeat: -1}",
        "sources:\n  a: {shards: x, max_samples: 1.5}",
        "sources: {a: [unclosed",
    ],
)
def test_bad_mix_files_fail_with_the_file_name(tmp_path, body):
    mix = tmp_path / "mix.yaml"
    mix.write_text(body)
    with pytest.raises(MixConfigError, match="mix.yaml"):
        read_mix(str(mix))


def test_a_pattern_without_shards_fails_at_startup(tmp_path):
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"sources:\n  a: {{shards: '{tmp_path}/none/*.tar'}}\n")
    with pytest.raises(FileNotFoundError, match="match no files"):
        grounding_mix_shards(str(mix))


def test_the_train_command_reads_a_mix_file_and_names_a_bad_one(tmp_path, capsys):
    from training.cli import main

    bad = tmp_path / "mix.yaml"
    bad.write_text("sources: [not, a, mapping]\n")
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "*.tar"),
                "--grounding",
                str(bad),
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    assert str(bad) in capsys.readouterr().err
