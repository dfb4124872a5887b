import json

import pytest

from curation.metaclip.metadata import MetadataError, load_metadata, wordfreq_entries


def test_loads_metaclip_json_list(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(["cat", "red star", "東京"]))
    assert load_metadata(str(path)) == ["cat", "red star", "東京"]


def test_loads_text_file_one_entry_per_line(tmp_path):
    path = tmp_path / "entries.txt"
    path.write_text("cat\nred star\n\ndog\n")
    assert load_metadata(str(path)) == ["cat", "red star", "dog"]


def test_loads_concepts_of_a_world_json_or_its_folder(tmp_path):
    (tmp_path / "world.json").write_text(json.dumps({"seed": 1, "concepts": ["circle", "red"]}))
    assert load_metadata(str(tmp_path / "world.json")) == ["circle", "red"]
    assert load_metadata(str(tmp_path)) == ["circle", "red"]


def test_loads_through_fsspec_urls(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(["cat"]))
    assert load_metadata(f"file://{path}") == ["cat"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"entries": []}', "'concepts' list"),
        ('["cat", 3]', "entry 1 is 3"),
        ('"cat"', "expected a JSON list"),
        ("[]", "empty"),
        ("[cat", "not JSON"),
    ],
)
def test_bad_metadata_names_the_file_and_cause(tmp_path, content, message):
    path = tmp_path / "metadata.json"
    path.write_text(content)
    with pytest.raises(MetadataError, match=message) as info:
        load_metadata(str(path))
    assert str(path) in str(info.value)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(MetadataError, match="no such file"):
        load_metadata(str(tmp_path / "nope.json"))


def test_offline_default_from_wordfreq_is_large_lowercase_and_has_no_numbers():
    entries = load_metadata("wordfreq")
    assert 100_000 < len(entries) < 300_000
    assert {"cat", "photograph", "mountain"} <= set(entries[:50_000])
    assert not any(entry.isdigit() for entry in entries)
    assert len(set(entries)) == len(entries)


def test_wordfreq_threshold_and_languages():
    strict = wordfreq_entries(("en",), min_zipf=4.0)
    assert 1000 < len(strict) < 10_000
    both = load_metadata("wordfreq:en,de")
    assert "haus" in both and "house" in both
    with pytest.raises(MetadataError, match="xx"):
        load_metadata("wordfreq:xx")
