"""minicc_quality.py --fresh: never-repeated pictures of the web's distribution, as shards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from training.data.shards import expand_shard_urls
from training.data.tars import iter_tar_samples

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import minicc_quality


def read(pattern: str) -> dict[str, dict[str, bytes]]:
    return {
        sample.key: sample.files
        for url in expand_shard_urls(pattern)
        for sample in iter_tar_samples(url)
    }


@pytest.fixture
def world(tmp_path: Path) -> Path:
    folder = tmp_path / "world"
    folder.mkdir()
    (folder / "world.json").write_text(json.dumps({"seed": 3}))
    return folder


def test_fresh_shards_pair_each_picture_with_its_caption_and_refs(world, tmp_path, monkeypatch):
    monkeypatch.setattr(minicc_quality, "FRESH_SHARD_SIZE", 4)
    text, grounding = minicc_quality.fresh_shards(world, 7, tmp_path / "fresh", processes=1)
    assert len(expand_shard_urls(text)) == len(expand_shard_urls(grounding)) == 2
    texts, refs = read(text), read(grounding)
    assert sorted(texts) == sorted(refs) == [f"{i:08d}" for i in range(7)]
    for key, files in texts.items():
        assert files["jpg"] == refs[key]["jpg"]
        caption = files["txt"].decode()
        phrases = json.loads(refs[key]["json"])["refs"]
        assert 1 <= len(phrases) <= 3
        for ref in phrases:
            # "the red star at the top left": the caption names the same shape's kind ("a star")
            kind = ref["phrase"].split()[2]
            assert kind in caption, (caption, ref["phrase"])
            x0, y0, x1, y1 = ref["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    # The pictures differ: no step sees one twice.
    assert len({files["jpg"] for files in texts.values()}) == 7


def test_fresh_shards_resume_and_are_deterministic(world, tmp_path, monkeypatch):
    monkeypatch.setattr(minicc_quality, "FRESH_SHARD_SIZE", 4)
    out = tmp_path / "fresh"
    minicc_quality.fresh_shards(world, 7, out, processes=1)
    first = {path: path.read_bytes() for path in sorted(out.rglob("*.tar"))}
    kept = out / "text" / "00000.tar"
    kept_mtime = kept.stat().st_mtime_ns
    (out / "grounding" / "00001.tar").unlink()  # an interrupted run
    minicc_quality.fresh_shards(world, 7, out, processes=1)
    assert kept.stat().st_mtime_ns == kept_mtime  # a finished shard is not rewritten
    assert {path: path.read_bytes() for path in sorted(out.rglob("*.tar"))} == first
    assert not list(out.rglob("*.tmp"))
