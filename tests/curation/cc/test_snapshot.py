import gzip

import pytest

from curation.cc.snapshot import list_snapshot_files


def write_listing(root, snapshot, name, paths):
    folder = root / "crawl-data" / snapshot
    folder.mkdir(parents=True)
    (folder / name).write_bytes(gzip.compress("\n".join(paths).encode() + b"\n"))


def test_listing_paths_are_joined_to_the_root(tmp_path):
    paths = [f"crawl-data/CC-MAIN-2099-01/segments/1/warc/f{i}.warc.gz" for i in range(3)]
    write_listing(tmp_path, "CC-MAIN-2099-01", "warc.paths.gz", paths)
    files = list_snapshot_files(str(tmp_path), "CC-MAIN-2099-01", "warc")
    assert files == [f"{tmp_path}/{p}" for p in paths]
    assert list_snapshot_files(str(tmp_path), "CC-MAIN-2099-01", "warc", max_files=2) == files[:2]


def test_missing_snapshot_names_the_listing(tmp_path):
    with pytest.raises(FileNotFoundError, match="CC-MAIN-1999-01/wat.paths.gz"):
        list_snapshot_files(str(tmp_path), "CC-MAIN-1999-01", "wat")


@pytest.mark.parametrize("snapshot, file_format", [("../etc", "warc"), ("CC-MAIN-2024-10", "pdf")])
def test_bad_arguments_fail_fast(tmp_path, snapshot, file_format):
    with pytest.raises(ValueError):
        list_snapshot_files(str(tmp_path), snapshot, file_format)
