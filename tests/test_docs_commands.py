"""Every command the README and the scale-out guide show parses with the real CLI parsers."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from curation.cli import build_parser as curation_parser
from training.cli import build_parser as training_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "infra" / "README.md"]
PARSERS = {"curation": curation_parser, "training": training_parser}


def fenced_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(package, argv) for each `python -m PACKAGE …` line of the file's fenced code blocks."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            match = re.search(r"-m (curation|training) (.*)", line)
            if match:
                # `[--flag value]` marks an option: parse it as if given.
                argv = [token.strip("[]") for token in shlex.split(match.group(2))]
                commands.append((match.group(1), [token for token in argv if token]))
    return commands


DOC_COMMANDS = [
    (path.name, package, argv) for path in DOCS for package, argv in fenced_commands(path)
]


def test_the_docs_show_commands_of_both_packages():
    assert {package for _, package, _ in DOC_COMMANDS} == {"curation", "training"}


@pytest.mark.parametrize(
    "doc,package,argv", DOC_COMMANDS, ids=[f"{d}:{p}:{' '.join(a[:2])}" for d, p, a in DOC_COMMANDS]
)
def test_documented_command_parses(doc, package, argv):
    try:
        PARSERS[package]().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(
            f"{doc}: `python -m {package} {' '.join(argv)}` does not parse (exit {exit_.code})"
        )


@pytest.mark.parametrize(
    "target",
    [
        "crawl SNAPSHOT=CC-MAIN-2024-10 OUT=s3://bucket/run",
        "curate IN=s3://bucket/run/pool OUT=s3://bucket/run/train_shards",
        "curate IN=pool OUT=train SCORER=runs/round0",
        "curate IN=pool OUT=train SCORER=runs/round0 NSFW_WEIGHTS=head.safetensors",
        "curate IN=pool OUT=train DEBIAS=0 LANGUAGE_MIX=",
        "train DATA=shards/*.tar RUN=runs/x PRESET=b16 NPROC=8",
    ],
)
def test_documented_make_targets_expand_to_commands_that_parse(target):
    plan = subprocess.run(
        ["make", "-n", *target.split()], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.replace("\\\n", " ")
    lines = [line for line in plan.splitlines() if re.search(r"-m (curation|training) ", line)]
    assert lines
    for line in lines:
        package, rest = re.search(r"-m (curation|training) (.*)", line).groups()
        PARSERS[package]().parse_args(shlex.split(rest))


@pytest.mark.parametrize(
    "variables,stages",
    [
        ("", ["balance", "neardup", "debias", "langmix"]),
        ("NSFW_WEIGHTS=h.safetensors", ["balance", "neardup", "debias", "langmix"]),
        (
            "SCORER=r NSFW_WEIGHTS=h.safetensors",
            ["balance", "score", "neardup", "nsfw"] + ["debias", "langmix"],
        ),
        ("WEIGHTS=w DEBIAS=0 LANGUAGE_MIX=", ["balance", "score", "neardup"]),
    ],
)
def test_make_curate_runs_the_filters_and_its_shards_require_exactly_the_stages_it_ran(
    variables, stages
):
    plan = subprocess.run(
        ["make", "-n", "curate", "IN=p", "OUT=t", *variables.split()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    filters = re.findall(r"-m curation (nsfw|debias|langmix) ", plan)
    require = re.search(r"-m curation shards .*--require (\S+)", plan).group(1)
    assert require.split(",") == stages
    # The filters run (in this order) exactly when shards applies them.
    assert filters == [s for s in stages if s in ("nsfw", "debias", "langmix")]


def dashboard_commands() -> list[tuple[str, str]]:
    """(part, command) for every command a dashboard page suggests for a missing part."""
    from curation.dashboard.layout import PRODUCERS

    return [(part, command) for part, (_, commands) in PRODUCERS.items() for command in commands]


@pytest.mark.parametrize("part,command", dashboard_commands(), ids=lambda x: str(x)[:60])
def test_every_command_the_dashboard_suggests_exists(part, command):
    if command.startswith("make "):
        target = command.split()[1]
        plan = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert plan.returncode == 0, f"{part}: `{command}`: {plan.stderr.strip()}"
        return
    package, rest = re.fullmatch(r"python -m (curation|training) (.*)", command).groups()
    try:
        PARSERS[package]().parse_args(shlex.split(rest))
    except SystemExit as exit_:
        pytest.fail(f"{part}: `{command}` does not parse (exit {exit_.code})")
