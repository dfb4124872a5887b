import math

import pytest

from curation.metaclip.builder import build_metadata

WORDNET_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived
02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis
09358358 17 n 01 gold_medal 0 000 | a medal made of gold
broken line without fields
"""
WORDNET_ADJ = """\
00001740 00 a 02 able 0 big(a) 0 000 | having the necessary means
"""


@pytest.fixture()
def dumps(tmp_path):
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    (wordnet / "data.noun").write_text(WORDNET_NOUN)
    (wordnet / "data.adj").write_text(WORDNET_ADJ)
    (tmp_path / "unigrams.tsv").write_text(
        "the\t100000\ngold\t200\nmedal\t150\ndog\t5000\nrare\t99\nbad line\n"
    )
    # N = 105449: "gold medal" 120 times -> PMI = log2(120 * N / (200 * 150)) ~ 8.7;
    # "the dog" 300 times -> log2(300 * N / (100000 * 5000)) < 0.
    (tmp_path / "bigrams.tsv").write_text("gold medal\t120\nthe dog\t300\nsingle\t5\n")
    (tmp_path / "views-1").write_text(
        "en Gold_medal 50 0\nen Dog 40 0\nde Hund 500 0\nen Cat 69 0\ngarbage\n"
    )
    (tmp_path / "views-2").write_text("en Gold_medal 30 0\nen Dog 10 0\n")
    return tmp_path


def test_builds_union_of_all_sources_in_order(dumps):
    entries, report = build_metadata(
        wordnet_dir=str(dumps / "wordnet"),
        unigrams=str(dumps / "unigrams.tsv"),
        bigrams=str(dumps / "bigrams.tsv"),
        min_pmi=8.0,
        pageviews=[str(dumps / "views-1"), str(dumps / "views-2")],
    )
    assert entries == [
        "entity",
        "dog",
        "domestic dog",
        "gold medal",
        "able",
        "big",
        "the",
        "gold",
        "medal",
        "Gold medal",
    ]
    assert report.entries_per_source == {"wordnet": 6, "unigrams": 3, "bigrams": 0, "titles": 1}
    assert report.bad_lines == {"wordnet": 1, "unigrams": 1, "bigrams": 1, "titles": 1}


def test_pmi_threshold_selects_bigrams(dumps):
    total = 100000 + 200 + 150 + 5000 + 99
    pmi = math.log2(120 * total / (200 * 150))
    high, _ = build_metadata(
        unigrams=str(dumps / "unigrams.tsv"), bigrams=str(dumps / "bigrams.tsv"), min_pmi=pmi - 0.01
    )
    low, _ = build_metadata(
        unigrams=str(dumps / "unigrams.tsv"), bigrams=str(dumps / "bigrams.tsv"), min_pmi=pmi + 0.01
    )
    assert "gold medal" in high and "gold medal" not in low
    assert "the dog" not in high


def test_title_views_are_summed_over_files_for_one_domain(dumps):
    views = [str(dumps / "views-1"), str(dumps / "views-2")]
    entries, _ = build_metadata(pageviews=views, min_title_views=50)
    assert entries == ["Gold medal", "Cat", "Dog"]  # most viewed first
    german, _ = build_metadata(pageviews=views, pageview_domain="de")
    assert german == ["Hund"]


def test_builder_needs_a_source_and_unigrams_for_bigrams(dumps):
    with pytest.raises(ValueError, match="no metadata source"):
        build_metadata()
    with pytest.raises(ValueError, match="unigram"):
        build_metadata(bigrams=str(dumps / "bigrams.tsv"))
