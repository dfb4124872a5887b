"""Where a run folder keeps each stage's output, and which command produces a missing one."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from curation import fsio

METRICS_FILE = "metrics.jsonl"  # the trainer's log (training/metrics_log.py)
EVAL_DIR = "eval"  # where `python -m training eval --ckpt RUN` writes step_NNNNNNNN.json

# What each part of a run is, and the commands that make it (shown when the part is missing). Every
# command here exists: tests/test_docs_commands.py parses each with the real CLIs and the Makefile.
PRODUCERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "stats": ("stage statistics (_stats/STAGE/SHARD.json)", ("make crawl", "make curate")),
    "pool": (
        "the downloaded pool (pool/*.parquet + pool/*.tar)",
        ("python -m curation download --input RUN/dedup --out RUN/pool", "make crawl"),
    ),
    "balance": (
        "MetaCLIP balancing columns (pool/curation/balance/)",
        (
            "python -m curation balance --input RUN/pool --metadata wordfreq:en --t 20000",
            "make curate",
        ),
    ),
    "score": (
        "CLIP-score columns (pool/curation/score/)",
        (
            "python -m curation score --pool RUN/pool --model tiny-clip --weights W.safetensors "
            "--threshold 0.25",
            "make curate",
        ),
    ),
    "neardup": (
        "near-duplicate columns (pool/curation/neardup/)",
        ("python -m curation neardup --pool RUN/pool", "make curate"),
    ),
    "debias": (
        "de-biasing columns and statistics (pool/curation/debias/)",
        ("python -m curation debias --pool RUN/pool --metadata wordfreq:en --max-drop 0.1",),
    ),
    "langmix": (
        "language-mixture columns and statistics (pool/curation/langmix/)",
        ("python -m curation langmix --pool RUN/pool --language-mix en=0.9,other=0.1",),
    ),
    "train": (
        "training metrics (train/metrics.jsonl)",
        ("python -m training train --data 'RUN/train_shards/*.tar' --out RUN/train", "make train"),
    ),
    "eval": (
        "evaluation results (train*/eval/step_*.json)",
        ("python -m training eval --ckpt RUN/train --data WORLD/eval",),
    ),
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

    def training_runs(self) -> list[str]:
        """The training run folders' names (`train`, and `train_round0` … as `make demo` writes
        them): the `train*` folders holding a metrics log or evaluation results."""
        fs, path = fsio.filesystem(self.root)
        if not fs.exists(path):
            return []
        names = sorted(
            posixpath.basename(p.rstrip("/"))
            for p in fs.ls(path, detail=False)
            if posixpath.basename(p.rstrip("/")).startswith("train")
        )
        return [
            name
            for name in names
            if fs.exists(posixpath.join(path, name, METRICS_FILE))
            or fs.exists(posixpath.join(path, name, EVAL_DIR))
        ]


def missing(part: str) -> dict[str, str]:
    """A note for the front end: what is missing and which command produces it."""
    what, commands = PRODUCERS[part]
    return {"part": part, "what": what, "command": "  or  ".join(commands)}
