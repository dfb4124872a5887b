"""MetaCLIP matching: the naive loop over 500k entries vs our batched Aho-Corasick matcher.

Metadata: 500k entries shaped like MetaCLIP's (real English words from wordfreq, bigrams of
them, capitalised multi-word "titles", a few with punctuation that can never match). Alt texts:
Zipf-sampled words in mixed case with punctuation, numbers, file names and "click here" noise.
Both matchers see the same texts; the naive loop runs on a subsample (it is ~10^4 times slower)
and its per-text rate is extrapolated. Rates are per CPU second of this process (one core), so a
busy shared machine slows both sides alike rather than skewing the ratio. The script asserts identical matches on that subsample and
prints texts/s per core for both, the ratio, the automaton build time and its memory.

    .venv/bin/python benchmarks/metaclip.py [--entries 500000] [--texts 200000] [--naive 60]
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.metaclip.matching import EntryMatcher, naive_match
from curation.metaclip.metadata import wordfreq_entries

NOISE = ("click here", "IMG_{n}.jpg", "DSC{n}", "image {n}", "thumbnail", "logo", "banner-{n}.png")
PUNCTUATION = (",", ".", "!", "?", ":", ";", " -", "`")


def synthetic_metadata(size: int, rng: np.random.Generator) -> list[str]:
    words = wordfreq_entries(("en",), min_zipf=1.0)
    unigrams = words[: size // 2]
    entries = list(unigrams)
    seen = set(entries)
    head = words[:20_000]
    while len(entries) < size:
        kind = rng.random()
        if kind < 0.5:  # bigram
            entry = f"{head[rng.integers(len(head))]} {head[rng.integers(len(head))]}"
        elif kind < 0.98:  # title: 2-4 capitalised words
            n = int(rng.integers(2, 5))
            entry = " ".join(head[rng.integers(len(head))].capitalize() for _ in range(n))
        else:  # contains punctuation, as some titles do ("St. Louis"): never matches
            entry = f"{head[rng.integers(len(head))].capitalize()}. {head[rng.integers(len(head))]}"
        if entry not in seen:
            seen.add(entry)
            entries.append(entry)
    return entries


def synthetic_alt_texts(count: int, rng: np.random.Generator) -> list[str]:
    words = wordfreq_entries(("en",), min_zipf=2.0)[:50_000]
    ranks = np.arange(1, len(words) + 1)
    weights = 1.0 / ranks**1.05
    weights /= weights.sum()
    texts = []
    lengths = rng.integers(2, 16, size=count)
    word_ids = rng.choice(len(words), size=int(lengths.sum()), p=weights)  # one draw: fast
    ends = np.cumsum(lengths)
    for length, end in zip(lengths, ends):
        if rng.random() < 0.06:
            texts.append(NOISE[rng.integers(len(NOISE))].format(n=rng.integers(10_000)))
            continue
        picked = [words[i] for i in word_ids[end - length : end]]
        if rng.random() < 0.4:
            picked[0] = picked[0].capitalize()
        if rng.random() < 0.3:
            picked.insert(int(rng.integers(len(picked))), str(rng.integers(1900, 2030)))
        text = " ".join(picked)
        if rng.random() < 0.5:
            text += PUNCTUATION[rng.integers(len(PUNCTUATION))]
        texts.append(text)
    return texts


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--naive", type=int, default=60, help="texts the naive loop matches")
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    entries = synthetic_metadata(args.entries, rng)
    texts = synthetic_alt_texts(args.texts, rng)
    print(
        f"metadata: {len(entries)} entries; texts: {len(texts)} "
        f"(mean {np.mean([len(t) for t in texts]):.0f} chars)"
    )

    gc.collect()
    rss_before = rss_mib()
    started = time.process_time()
    matcher = EntryMatcher(entries)
    build_seconds = time.process_time() - started
    automaton_mib = rss_mib() - rss_before
    print(f"automaton build: {build_seconds:.2f} s, peak RSS +{automaton_mib:.0f} MiB")

    started = time.process_time()
    batches = [
        matcher.match_batch(texts[start : start + args.batch])
        for start in range(0, len(texts), args.batch)
    ]
    ours_seconds = time.process_time() - started
    ours = [ids for batch in batches for ids in batch.to_pylist()]
    ours_rate = len(texts) / ours_seconds
    matched = sum(1 for ids in ours if ids)
    print(
        f"ours:  {ours_rate:,.0f} texts/s on 1 core ({matched / len(texts):.1%} of texts "
        f"match, {sum(map(len, ours)) / len(texts):.2f} entries per text)"
    )

    sample = rng.choice(len(texts), size=min(args.naive, len(texts)), replace=False)
    started = time.process_time()
    naive = [naive_match(texts[i], entries) for i in sample]
    naive_rate = len(sample) / (time.process_time() - started)
    print(f"naive: {naive_rate:,.1f} texts/s on 1 core (on {len(sample)} texts)")
    for i, expected in zip(sample, naive):
        assert ours[i] == expected, f"text {i} {texts[i]!r}: ours {ours[i]} != naive {expected}"
    print(f"identical matches on all {len(sample)} naive texts")
    ratio = ours_rate / naive_rate
    print(
        f"ratio: {ratio:,.0f}x naive (target >= 1000x); {ours_rate:,.0f} texts/s/core "
        f"(target >= 50,000)"
    )


if __name__ == "__main__":
    main()
