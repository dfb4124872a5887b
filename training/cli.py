"""Command line: `python -m training train --preset tiny --data 'DIR/{00000..00009}.tar' ...`.

The same command runs under `torchrun --nproc_per_node N -m training train ...`. Flags cover
the usual knobs; anything else in the config is a `key.sub=value` override at the end, e.g.
`optim.lr=1e-3 data.batch_size=64 model.overrides.vision.depth=4`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.config import ConfigError, load_args
from training.data.grounding_mix import MixConfigError, grounding_mix_shards
from training.data.shards import expand_shard_urls
from training.eval.run import add_command as add_eval_command
from training.export.cli import add_commands as add_export_commands

MIX_SUFFIXES = (".yaml", ".yml", ".json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train from WebDataset shards (phases 1-3 as the config's schedule sets)"
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--preset", default="tiny", help="config preset in training/configs/ (tiny, b16, so400m)"
    )
    source.add_argument("--config", help="a YAML config file instead of a preset")
    train.add_argument("--data", help="image-text shards: brace pattern or glob of fsspec URLs")
    train.add_argument(
        "--grounding",
        help="grounding shards (phrases with boxes), or a grounding "
        "mix file (.yaml/.json from `python -m curation grounding --mix-config`)",
    )
    train.add_argument("--out", help="run folder: checkpoints, metrics.jsonl, tensorboard/")
    train.add_argument("--steps", type=int, help="total optimizer steps")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    add_export_commands(commands)  # export, import-siglip2 (training/export/cli.py)
    add_eval_command(commands)  # eval (training/eval/run.py)
    return parser


def check_shards_exist(args) -> None:
    """A shard pattern that matches nothing is a typo: say so before building anything."""
    for flag, spec in (
        ("--data", args.data.text_shards),
        ("--grounding", args.data.grounding_shards),
    ):
        if spec:
            try:
                expand_shard_urls(spec)
            except FileNotFoundError as error:
                raise ConfigError(f"{flag}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if hasattr(options, "handler"):  # commands other than train carry their own handler
        return options.handler(options)
    try:
        args = load_args(options.config or options.preset, options.overrides)
        # Flags are set after YAML parsing: shard patterns must stay verbatim strings.
        if options.data:
            args.data.text_shards = options.data
        if options.grounding:
            args.data.grounding_shards = (
                grounding_mix_shards(options.grounding)
                if options.grounding.endswith(MIX_SUFFIXES)
                else options.grounding
            )
        if options.out:
            args.out = options.out
        if options.steps:
            args.schedule.steps = options.steps
        args.resolve()
        check_shards_exist(args)
    except (ConfigError, MixConfigError, ValueError) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    # Here, not at the top: eval and export do without the trainer's imports (FSDP2, DCP).
    from training.trainer import train

    folder = train(args)
    print(f"trained to {folder}")
    return 0
