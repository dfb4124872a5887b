"""Sample filters for the score stage: a CLIP-score threshold, a global top fraction, and
DataComp's basic rules.

The top fraction is a fraction of the WHOLE pool, so its threshold is a global quantile, computed
in the driver from every shard's scores before any shard's keep flag is written:
- `exact`: gather every score (4 bytes each: 1e9 samples = 4 GB) and select the k-th largest;
- `histogram`: stream the scores into a fixed-width histogram over the cosine range [-1, 1]
  (memory O(bins), independent of the pool size) and cut at the lower edge of the bin where the
  running count from the top reaches k. The cut is applied exactly (score >= edge), so the error
  is only in how many are kept: between k and k + (that bin's count) - 1, and the cut value lies
  within one bin width (2 / bins) below the exact threshold. Both numbers are reported.
`auto` (the default) is exact up to EXACT_LIMIT scores, histogram above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EXACT_LIMIT = 200_000_000
DEFAULT_BINS = 1 << 20


@dataclass(frozen=True)
class BasicRules:
    """DataComp's basic filter (English-only is not applied: the pool has no language column)."""

    min_side: int = 200
    max_aspect: float = 3.0
    min_caption_words: int = 3  # DataComp: "more than two words"
    min_caption_chars: int = 6  # DataComp: "more than five characters"

    def to_record(self) -> dict:
        return asdict(self)


def basic_rule_failures(table: pa.Table, rules: BasicRules) -> dict[str, np.ndarray]:
    """{reason: bool mask of rows failing that rule}. Sizes are the source image's (DataComp's
    rules look at the original), falling back to the stored size when the original is unknown."""

    def size(column: str) -> np.ndarray:
        stored = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
        original_column = f"original_{column}"
        if original_column in table.column_names:
            original = table[original_column].to_numpy(zero_copy_only=False).astype(np.float64)
            return np.where(np.isnan(original), stored, original)
        return stored

    width, height = size("width"), size("height")
    short, long = np.fmin(width, height), np.fmax(width, height)
    text = pc.fill_null(table["text"], "")
    stripped = pc.utf8_trim_whitespace(text)
    chars = pc.utf8_length(stripped).to_numpy(zero_copy_only=False)
    words = pc.list_value_length(pc.utf8_split_whitespace(stripped)).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        aspect = long / short
    return {
        "basic_min_side": ~(short >= rules.min_side),
        "basic_aspect_ratio": ~(aspect <= rules.max_aspect),
        "basic_caption_words": words < rules.min_caption_words,
        "basic_caption_chars": chars < rules.min_caption_chars,
    }


def _top_count(total: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    return max(1, math.ceil(fraction * total))


@dataclass(frozen=True)
class QuantileResult:
    threshold: float  # keep scores >= threshold
    method: str
    scores: int  # how many finite scores the pool has
    target_keep: int  # ceil(fraction * scores)
    max_extra_kept: int  # the cut may keep up to this many more than target_keep (ties / bin)
    value_error: float  # |cut - exact k-th largest score| is below this

    def to_record(self) -> dict:
        return asdict(self)


def exact_top_fraction(score_chunks: Iterable[np.ndarray], fraction: float) -> QuantileResult:
    scores = np.concatenate(
        [chunk[np.isfinite(chunk)] for chunk in score_chunks] or [np.empty(0, np.float32)]
    )
    if scores.size == 0:
        raise ValueError("the pool has no finite scores to take a top fraction of")
    k = _top_count(scores.size, fraction)
    threshold = float(np.partition(scores, scores.size - k)[scores.size - k])
    ties_above = int(np.count_nonzero(scores >= threshold)) - k
    return QuantileResult(threshold, "exact", int(scores.size), k, ties_above, 0.0)


class ScoreHistogram:
    """Fixed-width counts of cosine scores over [-1, 1]; mergeable, memory O(bins)."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)

    @property
    def width(self) -> float:
        return 2.0 / self.bins

    def add(self, scores: np.ndarray) -> None:
        finite = scores[np.isfinite(scores)].astype(np.float64)
        index = np.clip(((finite + 1.0) / self.width).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(index, minlength=self.bins)

    def top_fraction(self, fraction: float) -> QuantileResult:
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("the pool has no finite scores to take a top fraction of")
        k = _top_count(total, fraction)
        from_top = np.cumsum(self.counts[::-1])
        bin_index = self.bins - 1 - int(np.searchsorted(from_top, k))
        edge = -1.0 + bin_index * self.width
        kept = int(from_top[self.bins - 1 - bin_index])
        # float32 scores sit on the float64 edges only up to rounding; compare in float32 too.
        return QuantileResult(float(np.float32(edge)), "histogram", total, k, kept - k, self.width)


def top_fraction_threshold(
    score_chunks: Iterable[np.ndarray],
    fraction: float,
    method: str = "auto",
    total: int | None = None,
    bins: int = DEFAULT_BINS,
) -> QuantileResult:
    """The global threshold keeping the top `fraction` of all scores (see the module docstring)."""
    if method == "auto":
        method = "exact" if total is not None and total <= EXACT_LIMIT else "histogram"
    if method == "exact":
        return exact_top_fraction(score_chunks, fraction)
    if method == "histogram":
        histogram = ScoreHistogram(bins)
        for chunk in score_chunks:
            histogram.add(chunk)
        return histogram.top_fraction(fraction)
    raise ValueError(f"unknown quantile method {method!r} (exact, histogram, auto)")
