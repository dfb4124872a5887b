"""`python -m curation COMMAND ...`: one sub-command per stage.

Each module listed in COMMAND_MODULES exposes `register(subparsers)`, which adds its parser and sets
`func` (called with the parsed namespace; its return value is the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: list[str] = [
    "curation.stats_cli",
    "curation.minicc.cli",
    "curation.dashboard.cli",
    "curation.stages.balance",
    "curation.stages.extract",
    "curation.stages.dedup",
    "curation.stages.download",
    "curation.stages.score",
    "curation.stages.neardup",
    "curation.stages.debias",
    "curation.stages.langmix",
    "curation.stages.nsfw",
    "curation.stages.nsfw_fit",
    "curation.stages.shards",
    "curation.stages.ingest_urls",
    "curation.stages.grounding",
    "curation.stages.detect_faces",
    "curation.stages.blur_faces",
    "curation.jobs",
    "curation.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m curation", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
