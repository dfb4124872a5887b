import numpy as np
import pytest

from curation.metaclip.matching import EntryMatcher, naive_match, space_text

# Pieces random texts and entries are built from: overlapping words, MetaCLIP's punctuation,
# whitespace it rewrites, other punctuation it leaves alone, and non-ASCII (accents, CJK, emoji
# outside the BMP, a combining mark, the separator the batch matcher uses internally).
WORDS = [
    "red",
    "star",
    "red star",
    "Red",
    "st",
    "art",
    "a",
    "b",
    "é",
    "café",
    "東京",
    "タワー",
    "😀",
    "e\u0301",
    "x-ray",
    "U.S.",
    "rock'n'roll",
    "C++",
    "\x1f",
    "ünï",
]
MARKS = [",", ".", ";", ":", "?", "!", "`", "\t", "\n", "\r", "-", "'", "(", ")", "/", "  "]


def random_text(rng: np.random.Generator) -> str:
    parts = []
    for _ in range(int(rng.integers(0, 9))):
        parts.append(
            WORDS[rng.integers(len(WORDS))]
            if rng.random() < 0.7
            else MARKS[rng.integers(len(MARKS))]
        )
        if rng.random() < 0.7:
            parts.append(" ")
    return "".join(parts)


def random_entries(rng: np.random.Generator, n: int) -> list[str]:
    entries = list(WORDS) + ["", "red star!", "St. Louis", "a  b", "red\tstar", " red", "star "]
    while len(entries) < n:
        entry = random_text(rng).strip(" ") if rng.random() < 0.8 else random_text(rng)
        if entry.strip():  # the one empty entry above is enough
            entries.append(entry)
    order = rng.permutation(len(entries))
    return [entries[i] for i in order]  # duplicates kept on purpose


@pytest.mark.parametrize("seed", range(8))
def test_batched_matcher_equals_naive_loop_on_random_texts(seed):
    rng = np.random.default_rng(seed)
    entries = random_entries(rng, 120)
    matcher = EntryMatcher(entries)
    texts = [random_text(rng) for _ in range(400)]
    assert matcher.match_batch(texts).to_pylist() == [naive_match(t, entries) for t in texts]


def test_single_text_and_batch_agree_and_ids_are_sorted_unique():
    rng = np.random.default_rng(99)
    entries = random_entries(rng, 60)
    matcher = EntryMatcher(entries)
    texts = [random_text(rng) for _ in range(100)]
    batch = matcher.match_batch(texts).to_pylist()
    for text, ids in zip(texts, batch):
        assert matcher.match(text) == ids
        assert ids == sorted(set(ids))


def test_overlapping_entries_all_match():
    matcher = EntryMatcher(["red", "red star", "star", "a red"])
    assert matcher.match("a red star") == [0, 1, 2, 3]
    assert matcher.match("red stars") == [0]  # "star" is not a whole word of "stars"


def test_punctuation_is_spaced_out_but_other_symbols_are_not():
    matcher = EntryMatcher(["star", "x-ray", "dog"])
    assert matcher.match("star!") == [0]
    assert matcher.match("(star)") == []  # parentheses are not in MetaCLIP's list
    assert matcher.match("an x-ray;dog") == [1, 2]


def test_matching_is_case_sensitive():
    matcher = EntryMatcher(["Paris", "paris"])
    assert matcher.match("PARIS") == []
    assert matcher.match("Paris, paris") == [0, 1]


def test_entry_containing_spaced_punctuation_never_matches_like_metaclip():
    entries = ["St. Louis", "Louis"]
    assert naive_match("St. Louis", entries) == [1]
    assert EntryMatcher(entries).match("St. Louis") == [1]


def test_tabs_and_newlines_separate_words():
    assert space_text("a\tb\nc\rd") == " a b c d "
    matcher = EntryMatcher(["b c", "a\tb"])
    assert matcher.match("a\tb\nc") == [0]  # an entry with a tab can never match


def test_unicode_entries_including_astral_characters():
    entries = ["東京 タワー", "😀", "café", "e\u0301"]
    matcher = EntryMatcher(entries)
    texts = ["😀 東京 タワー!", "Café café", "e\u0301 😀😀", "東京タワー"]
    assert matcher.match_batch(texts).to_pylist() == [[0, 1], [2], [3], []]


def test_duplicate_entries_all_report_their_ids():
    matcher = EntryMatcher(["cat", "dog", "cat"])
    assert matcher.match("cat and dog") == [0, 1, 2]


def test_null_and_empty_texts():
    matcher = EntryMatcher(["cat", ""])
    # An empty entry matches wherever the spaced text has two spaces in a row, as in MetaCLIP.
    assert matcher.match_batch([None, "", "cat", "cat."]).to_pylist() == [[], [1], [0], [0, 1]]


def test_text_containing_the_internal_separator_falls_back_correctly():
    matcher = EntryMatcher(["a", "b"])
    assert matcher.match_batch(["a\x1fb", "b"]).to_pylist() == [[], [1]]


def test_empty_batch_and_unmatchable_metadata():
    assert EntryMatcher(["cat"]).match_batch([]).to_pylist() == []
    assert EntryMatcher(["a\nb"]).match_batch(["a b"]).to_pylist() == [[]]


def test_non_string_entry_is_rejected_with_its_position():
    with pytest.raises(TypeError, match="entry 1"):
        EntryMatcher(["cat", 3])
