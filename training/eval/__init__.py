"""Evaluation of trained encoders on CLIP_benchmark-layout WebDataset sets: zero-shot
classification, image-text retrieval, and referring-expression grounding (ARef)."""

from collections.abc import Iterable

import numpy as np

# Per-trial outcomes of a headline metric ("1" hit, "0" miss, in the set's order), stored beside
# it so that two models scored on the same set can be compared pairwise (the standard error of
# a difference of two accuracies on the same trials: McNemar's setting).
HITS_SUFFIX = "/hits"


def hit_string(hits: Iterable[bool]) -> str:
    """Each trial's outcome in order, "1" a hit and "0" a miss."""
    return "".join("1" if hit else "0" for hit in np.asarray(hits, dtype=bool).ravel())


def read_hit_string(text: str) -> np.ndarray:
    """The bool array a hit_string wrote; refuses anything but 0s and 1s."""
    if text.strip("01"):
        raise ValueError(f"a hit string holds only 0s and 1s, not {sorted(set(text) - set('01'))}")
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("1")
