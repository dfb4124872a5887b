"""The parts every curation stage module shares: run options, the common CLI flags, report → exit code.

Every stage module (`curation/stages/*.py`) has the same four parts, after datatrove's
`PipelineStep.run` and torchtitan's config dataclasses:

- `XConfig`: a frozen dataclass with the stage's inputs, output folder and settings (paths are
  fsspec URLs). Bad settings raise `ConfigError` in `__post_init__` or in the driver, before any
  shard runs.
- `run(config: XConfig, options: RunOptions = RunOptions()) -> list[StageReport]`: the driver.
  It returns one report per pass it ran, in order (a pass that did not start is absent); a
  stage's own numbers go in the last report's `summary` and its human lines in `notes`.
- `config_from_args(args) -> XConfig`: the CLI namespace → the config.
- `register(subparsers)`: adds the parser, calls `add_run_options(parser)`, and sets
  `func=cli_main(run, config_from_args)`.

So `python -m curation STAGE …` always takes `--seed`, `--no-ray` and `--no-progress`, prints
each report, and exits 0 when every shard succeeded, 1 when a shard failed, 2 on bad settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from curation import fsio
from curation.runner import StageReport


class ConfigError(ValueError):
    """A stage's settings or inputs cannot work; raised before any shard runs (exit code 2)."""


@dataclass(frozen=True)
class RunOptions:
    """How a driver runs its passes; the same for every stage."""

    seed: int = 0
    use_ray: bool = True
    progress: bool = True

    def stage_args(self) -> dict[str, Any]:
        """The keyword arguments `run_stage` takes from these options."""
        return {"seed": self.seed, "use_ray": self.use_ray, "progress": self.progress}


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=0, help="run seed (per-shard seeds derive from it)"
    )
    parser.add_argument(
        "--no-ray", action="store_true", help="run the shards one by one in this process"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(seed=args.seed, use_ray=not args.no_ray, progress=not args.no_progress)


def exit_code(reports: Sequence[StageReport]) -> int:
    """Print every report; 0 if all of them succeeded, else 1."""
    for report in reports:
        print(report.describe())
    return 0 if all(report.ok for report in reports) else 1


Driver = Callable[[Any, RunOptions], list[StageReport]]


def cli_main(
    run: Driver, config_from_args: Callable[[argparse.Namespace], Any]
) -> Callable[[argparse.Namespace], int]:
    """The `func` a stage's parser calls: build the config, run the driver, report."""

    def main(args: argparse.Namespace) -> int:
        try:
            config = config_from_args(args)
            reports = run(config, run_options(args))
        except (ConfigError, fsio.PlanMismatchError) as exc:
            # Stage errors name their stage ("score: ..."), for callers without a CLI; say it once.
            message, prefix = str(exc), f"{args.command}: "
            print(message if message.startswith(prefix) else prefix + message, file=sys.stderr)
            return 2
        return exit_code(reports)

    return main
