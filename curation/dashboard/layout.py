"""Where a run folder keeps each stage's output, and which command produces a missing one."""

from __future__ import annotations

from dataclasses import dataclass

from curation import fsio

# What each part of a run is, and the command that makes it (shown when the part is missing).
PRODUCERS: dict[str, tuple[str, str]] = {
    "stats": ("stage statistics (_stats/STAGE/SHARD.json)", "make crawl / make curate"),
    "pool": (
        "the downloaded pool (pool/*.parquet + pool/*.tar)",
        "python -m curation download --input RUN/dedup --out RUN/pool  (make crawl)",
    ),
    "balance": (
        "MetaCLIP balancing columns (pool/curation/balance/)",
        "python -m curation balance --input RUN/pool --metadata M --t T  (make curate)",
    ),
    "score": (
        "CLIP-score columns (pool/curation/score/)",
        "python -m curation score --pool RUN/pool --weights W --threshold S  (make curate)",
    ),
    "neardup": (
        "near-duplicate columns (pool/curation/neardup/)",
        "python -m curation neardup --pool RUN/pool  (make curate)",
    ),
    "train": (
        "training metrics (train/metrics.jsonl)",
        "python -m training train --out RUN/train  (make train)",
    ),
    "eval": ("evaluation results (eval/*.json)", "make eval"),
}


@dataclass(frozen=True)
class RunLayout:
    """The folders of one run (any fsspec URL), named as `make demo` lays them out."""

    root: str

    @property
    def pool(self) -> str:
        return fsio.join(self.root, "pool")

    def curation(self, stage: str) -> str:
        return fsio.join(self.pool, "curation", stage)

    @property
    def train(self) -> str:
        return fsio.join(self.root, "train")

    @property
    def eval(self) -> str:
        return fsio.join(self.root, "eval")


def missing(part: str) -> dict[str, str]:
    """A note for the front end: what is missing and which command produces it."""
    what, command = PRODUCERS[part]
    return {"part": part, "what": what, "command": command}
