"""Build MetaCLIP-style metadata from the open sources, given dump files the user downloaded.

MetaCLIP's ~500k English entries are the union of four parts. Each part reads one input format:

1. WordNet synsets: the lemma names of every synset, from the WordNet 3.x database files
   `data.noun`, `data.verb`, `data.adj`, `data.adv` (Princeton format). Header lines start with
   two spaces; a synset line is `offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] ...`
   with `w_cnt` as two hex digits. Underscores in words become spaces; adjective markers such as
   `(a)`, `(p)`, `(ip)` are removed.
2. Wikipedia unigrams with count >= 100 (`min_unigram_count`): a TSV with `word<TAB>count` per
   line, counted over the article text (e.g. from wikiextractor output, split on whitespace).
3. Wikipedia bigrams with PMI >= 30 (`min_pmi`): a TSV with `word1 word2<TAB>count` per line from
   the same text. PMI is log2(count(w1 w2) * N / (count(w1) * count(w2))) with N the total number
   of unigrams (NLTK's BigramAssocMeasures.pmi); words must be in the unigram file.
   `min_bigram_count` drops bigrams seen too rarely for their PMI to mean anything.
4. Wikipedia titles with >= 70 page views (`min_title_views`): Wikimedia pageview dump files,
   lines `domain_code page_title count_views total_response_size` (e.g. `en Gold_medal 812 0`),
   summed over all files given, for one domain code (default `en`). Underscores become spaces.

Entries are deduplicated keeping the first source's order (WordNet, unigrams, bigrams, titles).
Bad lines are counted per source and skipped, never fatal; `BuildReport` says how many.
"""

from __future__ import annotations

import gzip
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from curation import fsio

WORDNET_DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_ADJECTIVE_MARKER = re.compile(r"\((a|p|ip)\)$")


@dataclass
class BuildReport:
    """How many entries each source contributed and how many input lines were unreadable."""

    entries_per_source: dict[str, int] = field(default_factory=dict)
    bad_lines: Counter = field(default_factory=Counter)
    bad_line_examples: list[str] = field(default_factory=list)

    def bad(self, source: str, where: str, line: str) -> None:
        self.bad_lines[source] += 1
        if len(self.bad_line_examples) < 20:
            self.bad_line_examples.append(f"{where}: {line[:200]!r}")


def _lines(url: str) -> Iterator[str]:
    data = fsio.read_bytes(url)
    if url.endswith(".gz"):
        data = gzip.decompress(data)
    yield from io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")


def wordnet_lemmas(wordnet_dir: str, report: BuildReport) -> list[str]:
    """Lemma names of every synset in the WordNet database folder, in file order."""
    lemmas: list[str] = []
    for name in WORDNET_DATA_FILES:
        url = fsio.join(wordnet_dir, name)
        if not fsio.exists(url):
            continue
        for number, line in enumerate(_lines(url), 1):
            if line.startswith("  ") or not line.strip():
                continue  # licence header
            fields = line.split()
            try:
                word_count = int(fields[3], 16)
                words = fields[4 : 4 + 2 * word_count : 2]
            except (IndexError, ValueError):
                report.bad("wordnet", f"{url}:{number}", line)
                continue
            if len(words) != word_count:
                report.bad("wordnet", f"{url}:{number}", line)
                continue
            lemmas.extend(_ADJECTIVE_MARKER.sub("", word).replace("_", " ") for word in words)
    if not lemmas:
        raise FileNotFoundError(
            f"{wordnet_dir}: none of {', '.join(WORDNET_DATA_FILES)} has a synset"
        )
    return lemmas


def read_counts(url: str, source: str, report: BuildReport) -> Counter:
    """A `key<TAB>count` TSV as a Counter (counts of repeated keys add up)."""
    counts: Counter = Counter()
    for number, line in enumerate(_lines(url), 1):
        key, tab, value = line.rstrip("\n").rpartition("\t")
        try:
            count = int(value)
        except ValueError:
            count = -1
        if not tab or not key or count < 0:
            report.bad(source, f"{url}:{number}", line)
            continue
        counts[key] += count
    return counts


def frequent_unigrams(unigram_counts: Counter, min_count: int) -> list[str]:
    return [word for word, count in unigram_counts.most_common() if count >= min_count]


def high_pmi_bigrams(
    bigram_counts: Counter,
    unigram_counts: Counter,
    min_pmi: float,
    min_bigram_count: int,
    report: BuildReport,
) -> list[str]:
    """Bigrams whose log2 pointwise mutual information is at least `min_pmi`, highest first."""
    total = sum(unigram_counts.values())
    scored: list[tuple[float, str]] = []
    for bigram, count in bigram_counts.items():
        parts = bigram.split(" ")
        if len(parts) != 2 or not all(parts):
            report.bad("bigrams", "bigram", bigram)
            continue
        first, second = (unigram_counts.get(part, 0) for part in parts)
        if count < min_bigram_count or not first or not second:
            continue
        pmi = math.log2(count * total / (first * second))
        if pmi >= min_pmi:
            scored.append((pmi, bigram))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [bigram for _pmi, bigram in scored]


def popular_titles(
    pageview_urls: Iterable[str], min_views: int, domain: str, report: BuildReport
) -> list[str]:
    """Titles of `domain` with at least `min_views` views summed over the pageview files."""
    views: Counter = Counter()
    for url in pageview_urls:
        for number, line in enumerate(_lines(url), 1):
            fields = line.split(" ")
            if len(fields) < 3 or not fields[2].strip().isdigit():
                report.bad("titles", f"{url}:{number}", line)
                continue
            if fields[0] == domain:
                views[fields[1]] += int(fields[2])
    return [title.replace("_", " ") for title, count in views.most_common() if count >= min_views]


def build_metadata(
    *,
    wordnet_dir: str | None = None,
    unigrams: str | None = None,
    bigrams: str | None = None,
    pageviews: Iterable[str] = (),
    min_unigram_count: int = 100,
    min_pmi: float = 30.0,
    min_bigram_count: int = 1,
    min_title_views: int = 70,
    pageview_domain: str = "en",
) -> tuple[list[str], BuildReport]:
    """The union of the sources given (any subset), deduplicated in source order."""
    if bigrams and not unigrams:
        raise ValueError("bigram PMI needs the unigram counts: pass unigrams too")
    report = BuildReport()
    parts: list[tuple[str, list[str]]] = []
    if wordnet_dir:
        parts.append(("wordnet", wordnet_lemmas(wordnet_dir, report)))
    unigram_counts = read_counts(unigrams, "unigrams", report) if unigrams else Counter()
    if unigrams:
        parts.append(("unigrams", frequent_unigrams(unigram_counts, min_unigram_count)))
    if bigrams:
        bigram_counts = read_counts(bigrams, "bigrams", report)
        parts.append(
            (
                "bigrams",
                high_pmi_bigrams(bigram_counts, unigram_counts, min_pmi, min_bigram_count, report),
            )
        )
    pageviews = list(pageviews)
    if pageviews:
        parts.append(
            ("titles", popular_titles(pageviews, min_title_views, pageview_domain, report))
        )
    if not parts:
        raise ValueError("no metadata source given")
    entries: list[str] = []
    seen: set[str] = set()
    for source, candidates in parts:
        added = 0
        for entry in candidates:
            if entry and entry not in seen:
                seen.add(entry)
                entries.append(entry)
                added += 1
        report.entries_per_source[source] = added
    return entries, report
