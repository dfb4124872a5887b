r"""MetaCLIP substring matching: which metadata entries does a text mention?

The semantics are MetaCLIP's (Xu et al., "Demystifying CLIP Data"), kept exactly so that counts
and curated sets are comparable with theirs: the text is padded with one space on each side, the
characters `, . ; : ? ! \`` get a space on each side, tabs, newlines and carriage returns become
spaces, and entry `e` matches when `" " + e + " "` occurs in the result (case-sensitive). A
consequence worth knowing: an entry with one of those punctuation characters in it (e.g. "St.
Louis") can never match, because the text's own punctuation is always spaced apart; that is what
MetaCLIP does too, so we keep it.

`naive_match` is the reference: a loop over every entry (tens of texts per second at 500k entries).
`EntryMatcher` finds the same matches with one Aho-Corasick automaton over the space-delimited
keys. It matches a whole batch in one pass: the spaced texts are joined with a newline, which no
spaced text contains, so no key (a key containing a newline can never match and is left out) can
match across two texts. Each match's end position is mapped back to its text with a binary search
over the separator positions, and the (text, entry) pairs are sorted and deduplicated with NumPy,
so the per-text Python work is a handful of C-level string operations.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

PUNCTUATION_TO_SPACE_OUT = (",", ".", ";", ":", "?", "!", "`")
WHITESPACE_TO_SPACE = ("\t", "\n", "\r")
# Joins spaced texts in a batch. No spaced text contains it (newlines become spaces).
_BATCH_SEPARATOR = "\n"
# Marks text boundaries in the raw joined batch before spacing; texts containing it are spaced
# one by one instead.
_RAW_SEPARATOR = "\x1f"


def space_text(text: str) -> str:
    """MetaCLIP's normalisation: pad, space out punctuation, turn tabs/newlines into spaces."""
    spaced = f" {text} "
    for mark in PUNCTUATION_TO_SPACE_OUT:
        spaced = spaced.replace(mark, f" {mark} ")
    for char in WHITESPACE_TO_SPACE:
        spaced = spaced.replace(char, " ")
    return spaced


def naive_match(text: str, entries: Sequence[str]) -> list[int]:
    """Reference matcher: the ids of every entry whose spaced form occurs in the spaced text."""
    spaced = space_text(text)
    return [entry_id for entry_id, entry in enumerate(entries) if f" {entry} " in spaced]


class EntryMatcher:
    """Exact MetaCLIP matching of many texts against many entries with one Aho-Corasick automaton.

    Entry ids are positions in `entries`. Duplicate entries all match (as in the naive loop): the
    automaton stores the first id of each distinct entry, and `_duplicate_ids` adds the others.
    """

    def __init__(self, entries: Sequence[str]):
        import ahocorasick

        self.entries = list(entries)
        if len(self.entries) >= 2**31:
            raise ValueError(f"{len(self.entries)} metadata entries do not fit int32 ids")
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)  # no Python object per entry
        first_id: dict[str, int] = {}
        duplicates: dict[int, list[int]] = {}
        for entry_id, entry in enumerate(self.entries):
            if not isinstance(entry, str):
                raise TypeError(f"metadata entry {entry_id} is {type(entry).__name__}, not str")
            if entry in first_id:
                duplicates.setdefault(first_id[entry], []).append(entry_id)
                continue
            first_id[entry] = entry_id
            if any(char in entry for char in WHITESPACE_TO_SPACE):
                continue  # a spaced text never contains these characters: it cannot match
            automaton.add_word(f" {entry} ", entry_id)
        self._searchable = len(automaton) > 0
        if self._searchable:
            automaton.make_automaton()
        self._automaton = automaton
        self._duplicate_ids = duplicates

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, text: str) -> list[int]:
        """Sorted unique ids of the entries `text` matches."""
        return self.match_batch([text])[0].as_py()

    def match_batch(self, texts: Sequence[str | None]) -> pa.ListArray:
        """Per text, the sorted unique matched entry ids (list<int32>; null texts match nothing)."""
        n = len(texts)
        if n == 0 or not self._searchable:
            return _list_array(np.zeros(n + 1, dtype=np.int32), np.zeros(0, dtype=np.int32))
        joined = _spaced_batch([text or "" for text in texts])
        matches = np.fromiter(
            itertools.chain.from_iterable(self._automaton.iter(joined)), dtype=np.int64
        ).reshape(-1, 2)
        ends, entry_ids = matches[:, 0], matches[:, 1]
        separators = _separator_positions(joined)
        text_index = np.searchsorted(separators, ends)
        if self._duplicate_ids:
            text_index, entry_ids = self._add_duplicates(text_index, entry_ids)
        pairs = np.sort(text_index * len(self.entries) + entry_ids)
        pairs = pairs[np.diff(pairs, prepend=-1) != 0]  # an entry mentioned twice counts once
        text_index, entry_ids = np.divmod(pairs, len(self.entries))
        null = np.fromiter((text is None for text in texts), dtype=bool, count=n)
        if null.any():
            keep = ~null[text_index]
            text_index, entry_ids = text_index[keep], entry_ids[keep]
        offsets = np.searchsorted(text_index, np.arange(n + 1)).astype(np.int32)
        return _list_array(offsets, entry_ids.astype(np.int32))

    def _add_duplicates(
        self, text_index: np.ndarray, entry_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        extra_texts: list[int] = []
        extra_ids: list[int] = []
        for position in np.flatnonzero(np.isin(entry_ids, list(self._duplicate_ids))):
            for duplicate in self._duplicate_ids[int(entry_ids[position])]:
                extra_texts.append(int(text_index[position]))
                extra_ids.append(duplicate)
        return (
            np.concatenate([text_index, np.asarray(extra_texts, dtype=np.int64)]),
            np.concatenate([entry_ids, np.asarray(extra_ids, dtype=np.int64)]),
        )


def _spaced_batch(texts: list[str]) -> str:
    """The spaced texts joined by the batch separator, spacing the whole batch at once if safe."""
    raw = _RAW_SEPARATOR.join(texts)
    if raw.count(_RAW_SEPARATOR) != len(texts) - 1:  # a text contains the raw separator
        return _BATCH_SEPARATOR.join(space_text(text) for text in texts)
    # Spacing is a per-character substitution, so it can run over the whole batch; the raw
    # separator then becomes "end padding + separator + start padding".
    for mark in PUNCTUATION_TO_SPACE_OUT:
        raw = raw.replace(mark, f" {mark} ")
    for char in WHITESPACE_TO_SPACE:
        raw = raw.replace(char, " ")
    return " " + raw.replace(_RAW_SEPARATOR, f" {_BATCH_SEPARATOR} ") + " "


def _separator_positions(joined: str) -> np.ndarray:
    """Code-point positions of the batch separators (the automaton reports code-point indices)."""
    code_points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return np.flatnonzero(code_points == ord(_BATCH_SEPARATOR))


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))
