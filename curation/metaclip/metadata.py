"""Loading MetaCLIP metadata: the list of entries that texts are matched against.

`load_metadata(spec)` accepts
- an fsspec URL of MetaCLIP's `metadata.json` (a JSON list of strings), or of a JSON object with a
  "concepts" list, such as the mini Common Crawl's `world.json` (a world folder works too);
- an fsspec URL of a text file with one entry per line (`.txt`);
- `wordfreq` or `wordfreq:LANG[,LANG...]`: the offline default, see `wordfreq_entries`.

The offline default comes from the `wordfreq` package (code Apache-2.0; its word lists are
CC-BY-SA 4.0, built from Wikipedia, subtitles, news, books, web text and more). It ships the lists
inside the wheel, so nothing is fetched at run time. It is a stand-in for MetaCLIP's
"Wikipedia unigrams with at least 100 occurrences" part only: single lowercase words, no WordNet
phrases, bigrams or titles; build those with `curation.metaclip.builder` when you have the dumps.
NLTK's WordNet is not used because its data is downloaded at run time, not shipped in a package.
"""

from __future__ import annotations

import json
import posixpath

from curation import fsio
from curation.stages.common import ConfigError

WORDFREQ_SPEC = "wordfreq"
# Zipf frequency 1.5 is ~30 occurrences per billion words: on English Wikipedia's ~4 billion
# words that is ~120 occurrences, close to MetaCLIP's "unigrams with >= 100 occurrences".
DEFAULT_MIN_ZIPF = 1.5


class MetadataError(ConfigError):
    """A metadata file that is not a list of entry strings."""


def load_metadata(spec: str) -> list[str]:
    """The metadata entries named by `spec` (see the module docstring); entry id = list position."""
    if spec == WORDFREQ_SPEC or spec.startswith(WORDFREQ_SPEC + ":"):
        languages = spec.partition(":")[2] or "en"
        return wordfreq_entries(
            tuple(lang.strip() for lang in languages.split(",") if lang.strip())
        )
    url = spec
    if not posixpath.splitext(url)[1] and fsio.exists(fsio.join(url, "world.json")):
        url = fsio.join(url, "world.json")
    if not fsio.exists(url):
        raise MetadataError(f"metadata {url}: no such file")
    raw = fsio.read_bytes(url)
    if url.endswith(".txt"):
        return _validated(url, [line for line in raw.decode("utf-8").splitlines() if line])
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"metadata {url}: not JSON ({exc})") from exc
    if isinstance(document, dict):
        if "concepts" not in document:
            raise MetadataError(
                f"metadata {url}: a JSON object needs a 'concepts' list, "
                f"found keys {sorted(document)[:10]}"
            )
        document = document["concepts"]
    return _validated(url, document)


def _validated(url: str, entries: object) -> list[str]:
    if not isinstance(entries, list):
        raise MetadataError(
            f"metadata {url}: expected a JSON list of strings, got {type(entries).__name__}"
        )
    for position, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise MetadataError(f"metadata {url}: entry {position} is {entry!r}, not a string")
    if not entries:
        raise MetadataError(f"metadata {url}: the list is empty")
    return entries


def wordfreq_entries(
    languages: tuple[str, ...] = ("en",), min_zipf: float = DEFAULT_MIN_ZIPF
) -> list[str]:
    """Words with Zipf frequency >= `min_zipf` in wordfreq's large lists, most frequent first.

    Tokens without a letter (numbers, punctuation) are left out, as are duplicates across
    languages. English at the default threshold gives ~174k entries.
    """
    import wordfreq

    entries: list[str] = []
    seen: set[str] = set()
    for language in languages:
        if language not in wordfreq.available_languages(
            "large"
        ) and language not in wordfreq.available_languages("best"):
            raise MetadataError(f"wordfreq has no word list for language {language!r}")
        wordlist = "large" if language in wordfreq.available_languages("large") else "best"
        min_frequency = 10 ** (min_zipf - 9)
        for word, frequency in wordfreq.get_frequency_dict(language, wordlist).items():
            if frequency < min_frequency:
                continue
            if word in seen or not any(char.isalpha() for char in word):
                continue
            seen.add(word)
            entries.append(word)
    return entries
