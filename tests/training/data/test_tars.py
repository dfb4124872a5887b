"""The one tar module: webdataset's key rule, deterministic writes, and curation's tolerant reader."""

import tarfile

import pytest

from curation.score.pool import iter_samples
from training.data.tars import add_sample, iter_tar_samples, write_tar

SAMPLES = [
    ("000001", {"jpg": b"\xff\xd8one", "txt": b"a red cup", "json": b"{}"}),
    ("part/000002", {"txt": b"two", "seg.png": b"mask"}),
]


def test_written_samples_read_back_with_folders_kept_and_the_key_cut_at_the_first_dot(tmp_path):
    write_tar(tmp_path / "s.tar", SAMPLES)
    read = [(s.key, s.files) for s in iter_tar_samples(str(tmp_path / "s.tar"))]
    assert read == [(key, dict(sorted(files.items()))) for key, files in SAMPLES]
    with tarfile.open(tmp_path / "s.tar") as archive:
        assert archive.getnames()[:3] == ["000001.jpg", "000001.json", "000001.txt"]


def test_the_same_samples_write_the_same_bytes(tmp_path):
    write_tar(tmp_path / "a.tar", SAMPLES)
    write_tar(tmp_path / "b.tar", SAMPLES)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_key_whose_file_name_has_a_dot_is_refused(tmp_path):
    with tarfile.open(tmp_path / "x.tar", "w") as archive, pytest.raises(ValueError, match="."):
        add_sample(archive, "dir/a.b", {"jpg": b""})


def test_curation_reads_pool_tars_by_the_same_rule_and_stops_quietly_where_a_tar_is_cut(tmp_path):
    big = [(f"{i:06d}", {"jpg": bytes(3000), "txt": b"t", "json": b"{}"}) for i in range(5)]
    write_tar(tmp_path / "pool.tar", big)
    assert [key for key, _ in iter_samples(str(tmp_path / "pool.tar"))] == [k for k, _ in big]
    assert list(iter_samples(str(tmp_path / "pool.tar"), ("txt",)))[0] == ("000000", {"txt": b"t"})
    data = (tmp_path / "pool.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    keys = [key for key, _ in iter_samples(str(tmp_path / "cut.tar"))]
    assert keys == [k for k, _ in big][: len(keys)] and 0 < len(keys) < len(big)
    with pytest.raises((tarfile.TarError, EOFError)):
        list(iter_tar_samples(str(tmp_path / "cut.tar")))
