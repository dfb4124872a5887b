import pytest

from curation.cc.text_filters import TextFilters

FILTERS = TextFilters()


@pytest.mark.parametrize(
    "text, reason",
    [
        ("a red bicycle leaning on a wall", None),
        ("red bicycle", None),
        ("蓝色背景上的红色圆形", None),
        ("Красный круг на синем фоне", None),
        ("dog", "text_too_short"),
        ("Bicycle", "text_too_few_words"),
        ("click here", "text_boilerplate"),
        ("Click Here!", "text_boilerplate"),
        ("IMG_20230514_1234.jpg", "text_file_name"),
        ("DSC01234", "text_file_name"),
        ("holiday-photo-2019-07.png", "text_file_name"),
        ("banner_728x90_v2", "text_file_name"),
        ("x" * 1001, "text_too_long"),
    ],
)
def test_default_filters_drop_non_captions_with_a_reason(text, reason):
    assert FILTERS.rejection(text, lang=None) == reason


def test_disabled_filters_keep_every_text():
    disabled = TextFilters.disabled()
    for text in ("click here", "IMG_0001.jpg", "a", "x" * 5000):
        assert disabled.rejection(text, lang=None) is None


def test_language_filter_keeps_only_listed_languages():
    english_only = TextFilters(languages=("en",))
    assert english_only.rejection("a dog playing in the park", "en") is None
    assert english_only.rejection("ein Hund spielt im Park", "de") == "text_language"
    assert english_only.rejection("ein Hund spielt im Park", None) == "text_language"


def test_language_detection_on_longer_texts_and_unknown_on_short_ones():
    assert (
        FILTERS.detect_language("a photograph of a small dog playing with a ball in the park")
        == "en"
    )
    assert (
        FILTERS.detect_language(
            "ein Foto von einem kleinen Hund, der im Park mit einem Ball spielt"
        )
        == "de"
    )
    assert FILTERS.detect_language("IMG") is None


def test_language_is_detected_only_for_texts_the_filters_keep_unless_it_filters():
    from collections import Counter
    from dataclasses import dataclass

    from curation.cc.candidates import CandidateTable, ImageRef, PageImages

    @dataclass(frozen=True)
    class CountingFilters(TextFilters):
        calls: list = None

        def detect_language(self, text):
            self.calls.append(text)
            return TextFilters.detect_language(text)

    refs = [
        ImageRef("http://a.example/1.jpg", "click to enlarge", ""),
        ImageRef("http://a.example/2.jpg", "a photograph of a small dog in the park", ""),
    ]
    for languages, detected in (
        (None, ["a photograph of a small dog in the park"]),
        (("en",), None),
    ):
        filters = CountingFilters(languages=languages, calls=[])
        table, drops = CandidateTable(filters, "x.warc.gz"), Counter()
        assert table.add_page(PageImages("http://a.example/", None, refs), 0, drops) == 1
        assert drops == Counter({"text_boilerplate": 1})
        assert filters.calls == (detected or [ref.alt for ref in refs])
        assert table.to_arrow().column("lang").to_pylist() == ["en"]
        # a declared language is never second-guessed
        filters.calls.clear()
        table.add_page(PageImages("http://a.example/", "de", refs), 0, drops)
        assert filters.calls == []
