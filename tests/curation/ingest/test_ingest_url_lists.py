from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cc.candidates import CANDIDATE_SCHEMA, pair_uid
from curation.cli import main
from curation.ingest.url_lists import LAION, generic_format, iter_candidate_batches, resolved_schema


def laion_rows() -> pa.Table:
    return pa.table(
        {
            "SAMPLE_ID": [1.0, 2.0, 3.0, 4.0, 5.0],  # some LAION parts store it as a float
            "URL": [
                "HTTP://Example.COM:80/a/../cat.jpg",
                "ftp://x/y.jpg",
                None,
                "https://e.com/d.jpg",
                "https://e.com/e.jpg",
            ],
            "TEXT": ["  a  cat\n", "a dog", "a cow", None, "Кошка на окне"],
            "WIDTH": [640, 0, 10, 10, None],
            "HEIGHT": [480, 5, 10, 10, 300],
            "similarity": [0.31, 0.2, 0.2, 0.2, 0.33],
            "NSFW": ["UNLIKELY"] * 5,
        }
    )


def test_laion_rows_map_onto_the_candidate_schema_and_bad_rows_are_counted(tmp_path):
    pq.write_table(laion_rows(), tmp_path / "part-0.parquet")
    drops: Counter = Counter()
    (table,) = list(iter_candidate_batches(str(tmp_path / "part-0.parquet"), LAION, "laion", drops))
    assert table.schema.names[: len(CANDIDATE_SCHEMA)] == CANDIDATE_SCHEMA.names
    rows = table.to_pylist()
    assert [r["url"] for r in rows] == ["http://example.com/cat.jpg", "https://e.com/e.jpg"]
    assert rows[0]["text"] == "a cat" and rows[0]["uid"] == pair_uid(
        "http://example.com/cat.jpg", "a cat"
    )
    assert [(r["width"], r["height"]) for r in rows] == [(640, 480), (None, 300)]
    assert [r["warc_offset"] for r in rows] == [0, 4] and rows[1]["text"] == "Кошка на окне"
    assert rows[0]["laion_sample_id"] == 1 and rows[1]["laion_clip_similarity"] == pytest.approx(
        0.33
    )
    assert rows[0]["laion_punsafe"] is None  # a LAION-5B column this LAION-400M part lacks
    assert drops == {"url_scheme": 1, "url_invalid": 1, "no_text": 1}


def test_generic_parquet_lists_name_their_columns_and_keep_extras(tmp_path):
    pq.write_table(
        pa.table({"image": ["https://e.com/1.png"], "caption": ["one"], "aesthetic": [6.5]}),
        tmp_path / "list.parquet",
    )
    out = tmp_path / "candidates"
    argv = [
        "ingest-urls",
        "--format",
        "parquet",
        "--input",
        str(tmp_path / "list.parquet"),
        "--out",
        str(out),
        "--url-col",
        "image",
        "--text-col",
        "caption",
        "--keep",
        "aesthetic",
        "--no-ray",
    ]
    assert main(argv[:-2] + ["--no-ray"]) == 2  # no --source
    assert main([*argv, "--source", "cc12m"]) == 0
    row = pq.read_table(out / "cc12m-00000.parquet").to_pylist()[0]
    assert (row["source"], row["aesthetic"], row["text_source"]) == ("cc12m", 6.5, "parquet")
    pq.write_table(
        pa.table({"image": ["https://e.com/2.png"], "caption": ["two"]}), tmp_path / "other.parquet"
    )
    other = [*argv[:4], str(tmp_path / "other.parquet"), *argv[5:], "--source", "cc12m"]
    assert main(other) == 2  # the same source from other lists into the same folder is refused


def test_a_file_that_is_not_the_named_format_fails_its_shard_with_the_file_name(tmp_path, capsys):
    pq.write_table(pa.table({"link": ["https://e.com/1.png"]}), tmp_path / "wrong.parquet")
    assert (
        main(
            [
                "ingest-urls",
                "--format",
                "datacomp",
                "--input",
                str(tmp_path / "wrong.parquet"),
                "--out",
                str(tmp_path / "c"),
                "--no-ray",
            ]
        )
        == 1
    )
    assert (
        "wrong.parquet: not a datacomp URL list, missing column(s) url, text"
        in capsys.readouterr().out
    )


def test_generic_keep_of_a_missing_column_is_refused():
    fmt = generic_format("u", "t", keep=("nope",))
    with pytest.raises(ValueError, match="nope"):
        resolved_schema(fmt, pa.schema([("u", pa.string()), ("t", pa.string())]))
