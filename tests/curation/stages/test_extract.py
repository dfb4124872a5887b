import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.cc.text_filters import TextFilters
from curation.cc.warc_writer import response_member, wat_member, write_archive
from curation.runner import ShardContext, ShardTask, run_stage
from curation.stages import extract
from curation.stages.common import RunOptions
from curation.stages.extract import ExtractConfig, ExtractStage, plan_tasks


def make_crawl(root: Path, files: int = 4, pages: int = 6) -> list[str]:
    """A small snapshot under root/crawl-data/CC-MAIN-TEST (WARC and WAT listings)."""
    warc_paths, wat_paths = [], []
    for f in range(files):
        members, wat = [], []
        for p in range(pages):
            page = f"http://site{f}.example/page{p}.html"
            images = [(f"img/{p}-{i}.jpg", f"photo {i} of page {p} in file {f}") for i in range(3)]
            html = "".join(f'<img src="{src}" alt="{alt}">' for src, alt in images)
            members.append(response_member(page, f"<html><body>{html}</body></html>".encode()))
            wat.append(wat_member(page, [{"url": src, "alt": alt} for src, alt in images]))
        for kind, content, listing in (("warc", members, warc_paths), ("wat", wat, wat_paths)):
            relative = f"crawl-data/CC-MAIN-TEST/segments/1/{kind}/file-{f:02d}.{kind}.gz"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            write_archive(str(root / relative), content)
            listing.append(relative)
    for name, listing in (("warc.paths.gz", warc_paths), ("wat.paths.gz", wat_paths)):
        (root / "crawl-data/CC-MAIN-TEST" / name).write_bytes(
            gzip.compress("\n".join(listing).encode())
        )
    return [str(root / p) for p in warc_paths]


def run_extract(files: list[str], out: Path, use_ray: bool = False, **settings):
    """The extract driver on these files; its one report."""
    options = RunOptions(use_ray=use_ray, progress=False)
    [report] = extract.run(ExtractConfig(tuple(files), str(out), **settings), options)
    return report


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


class CrashOnce:
    """ExtractStage that kills its worker mid-write of one shard, the first time only."""

    def __init__(self, flag: str, shard: str):
        self.inner = ExtractStage()
        self.flag, self.shard = flag, shard

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        if task.shard_id == self.shard and not os.path.exists(self.flag):
            Path(self.flag).touch()
            with ctx.open_output(f"{task.shard_id}.parquet") as handle:
                handle.write(b"PAR1 partial")
                os._exit(1)
        self.inner(task, ctx)


def test_killed_extract_rerun_gives_identical_output(tmp_path, ray_session):
    files = make_crawl(tmp_path / "cc")
    reference = tmp_path / "reference"
    assert run_extract(files, reference, use_ray=True).ok

    out = tmp_path / "killed"
    tasks = plan_tasks(files, str(out))
    crashing = CrashOnce(str(tmp_path / "crashed"), "00002")
    first = run_stage("extract", crashing, tasks, str(out), max_retries=0, progress=False)
    assert [f["shard"] for f in first.failed] == ["00002"]
    second = run_extract(files, out, use_ray=True)
    assert second.ok and [r["shard"] for r in second.completed] == ["00002"]
    assert outputs(out) == outputs(reference)
    assert len(outputs(out)) == 4


def test_snapshot_listing_run_writes_one_candidate_file_per_input(tmp_path, ray_session):
    make_crawl(tmp_path / "cc", files=2)
    out = tmp_path / "candidates"
    args = [
        "extract",
        "--snapshot",
        "CC-MAIN-TEST",
        "--cc-root",
        str(tmp_path / "cc"),
        "--out",
        str(out),
        "--format",
        "wat",
        "--max-files",
        "2",
    ]
    assert run_cli(args) == 0
    table = pq.read_table(out / "00001.parquet")
    assert table.num_rows == 6 * 3
    assert table.column("warc_path").to_pylist()[0].endswith("file-01.wat.gz")
    record = json.loads((out / "_stats" / "extract" / "00000.json").read_text())
    assert record["extra"]["pairs"] == 18 and record["extra"]["format"] == "wat"
    manifest = json.loads((out / "_inputs" / "extract.json").read_text())
    assert [Path(p).name for p in manifest["inputs"]] == ["file-00.wat.gz", "file-01.wat.gz"]


def run_cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    extract.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_rerun_with_another_input_list_is_refused(tmp_path):
    files = make_crawl(tmp_path / "cc", files=3, pages=1)
    out = str(tmp_path / "out")
    plan_tasks(files[:2], out)
    assert [t.shard_id for t in plan_tasks(files, out)] == ["00000", "00001", "00002"]
    assert [t.inputs[0] for t in plan_tasks(files[:1], out)] == files[:1]
    with pytest.raises(ValueError, match="different input list"):
        plan_tasks(files[1:], out)


def test_no_text_filters_flag_reaches_the_stage(tmp_path):
    path = tmp_path / "one.warc.gz"
    write_archive(
        str(path), [response_member("http://a.example/", b'<img src="x.jpg" alt="logo">')]
    )
    out = tmp_path / "out"
    assert (
        run_cli(
            ["extract", "--input", str(path), "--out", str(out), "--no-text-filters", "--no-ray"]
        )
        == 0
    )
    assert pq.read_table(out / "00000.parquet").column("text").to_pylist() == ["logo"]
    filtered = run_extract([str(path)], tmp_path / "filtered", filters=TextFilters())
    assert filtered.completed[0]["drops"] == {"text_too_short": 1}


def planted_pairs(world: Path) -> Counter:
    """(page URL, absolute image URL, text, text source) of every <img> with a URL and a text, on
    the pages without a planted page fault (those records are unreadable by design)."""
    truth = pq.read_table(world / "truth.parquet").to_pylist()
    return Counter(
        (t["page_url"], t["image_url"], t["text"], "alt" if t["alt"] else "title")
        for t in truth
        if t["image_url"] and t["text"] and t["page_fault"] is None
    )


@pytest.mark.parametrize("file_format", ["warc", "wat"])
def test_every_planted_pair_is_extracted_from_the_mini_crawl(
    minicc_world, tmp_path, ray_session, file_format
):
    snapshot = json.loads((minicc_world / "world.json").read_text())["snapshot"]
    out = tmp_path / "candidates"
    assert (
        run_cli(
            [
                "extract",
                "--snapshot",
                snapshot,
                "--cc-root",
                str(minicc_world),
                "--out",
                str(out),
                "--format",
                file_format,
                "--no-text-filters",
            ]
        )
        == 0
    )
    rows = [
        row for path in sorted(out.glob("*.parquet")) for row in pq.read_table(path).to_pylist()
    ]
    extracted = Counter((r["page_url"], r["url"], r["text"], r["text_source"]) for r in rows)
    expected = planted_pairs(minicc_world)
    truth = pq.read_table(minicc_world / "truth.parquet").to_pylist()
    with_alt = {
        (t["page_url"], t["image_url"], t["alt"])
        for t in truth
        if t["alt"] and t["image_url"] and t["page_fault"] is None
    }
    non_utf8 = [
        t for t in truth if t["alt"] and t["charset"] != "utf-8" and t["page_fault"] is None
    ]
    assert len(with_alt) > 500 and non_utf8, "the world is too small to check anything"
    assert with_alt <= {(p, u, text) for p, u, text, source in extracted if source == "alt"}
    assert extracted == expected  # as multisets: a page may show one image twice
    records = [
        json.loads(p.read_text()) for p in sorted((out / "_stats" / "extract").glob("*.json"))
    ]
    if file_format == "warc":  # the planted faults are counted, not fatal
        errors = sum((Counter(r["errors"]) for r in records), Counter())
        assert errors == Counter({"bad_http_header": 1, "truncated_record": 1})


def test_unreadable_file_is_an_error_that_a_rerun_retries(tmp_path):
    good = response_member(
        "http://a.example/", b'<img src="x.jpg" alt="a red kite over the hills">'
    )
    files = [tmp_path / "good.warc.gz", tmp_path / "bad.warc.gz", tmp_path / "damaged.warc.gz"]
    write_archive(str(files[0]), [good])
    files[1].write_bytes(bytes(range(256)) * 100)  # random bytes named .warc.gz
    write_archive(str(files[2]), [good, b"\x1f\x8b\x08 damaged member", good])
    out = tmp_path / "out"
    names = [str(f) for f in files]

    first = run_extract(names, out)
    assert [f["shard"] for f in first.failed] == ["00001"]
    error = json.loads((out / "_errors" / "extract" / "00001.json").read_text())
    assert error["inputs"] == [names[1]] and "no readable WARC record" in error["message"]
    assert not (out / "_stats" / "extract" / "00001.json").exists()
    # The partly damaged file keeps its two good records and is named in the report.
    damaged = json.loads((out / "_stats" / "extract" / "00002.json").read_text())
    assert damaged["rows_out"] == 2 and damaged["errors"] == {"corrupt_member": 1}
    assert damaged["error_examples"][0]["where"].startswith(names[2] + "@")
    assert any(names[2] in line and "corrupt_member 1" in line for line in first.notes)
    assert first.summary["damaged_files"] == 1

    write_archive(str(files[1]), [good])  # the file is fixed (re-downloaded): a re-run takes it
    second = run_extract(names, out)
    assert [r["shard"] for r in second.completed] == ["00001"] and second.ok
    assert not (out / "_errors" / "extract" / "00001.json").exists()
