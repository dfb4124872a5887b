"""The cluster recipes name things that exist: the Dockerfile copies real paths, installs real
extras and a faiss that does not clash, on a CUDA base that matches torch's; the commands in
the KubeRay and cluster-launcher YAMLs and in the infra guide are real make targets and CLI
commands whose arguments parse. Building the image is a user step (no Docker here)."""

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from curation.cli import build_parser as curation_parser
from training.cli import build_parser as training_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
YAMLS = sorted((ROOT / "infra").rglob("*.yaml"))


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):(?!=)", text, re.M))


def dockerfile_instructions() -> list[tuple[str, str]]:
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in logical.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_dockerfile_copies_paths_that_exist_and_installs_extras_that_exist():
    instructions = dockerfile_instructions()
    for kind, rest in instructions:
        if kind == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    runs = " && ".join(rest for kind, rest in instructions if kind == "RUN")
    for requested in re.findall(r"-e '\.\[([\w,]+)\]'", runs):
        for extra in requested.split(","):
            assert extra in extras, f"pip extra [{extra}] is not in pyproject.toml"


def test_the_image_has_one_faiss_and_a_cuda_base_matching_torch():
    instructions = dockerfile_instructions()
    runs = " && ".join(rest for kind, rest in instructions if kind == "RUN")
    steps = [step.strip() for step in runs.split("&&")]
    base_install = next(i for i, s in enumerate(steps) if s.startswith("pip install") and "-e" in s)
    removal = next(i for i, s in enumerate(steps) if s == "pip uninstall -y faiss-cpu")
    gpu = next(i for i, s in enumerate(steps) if "FAISS_GPU" in s and "pip install" in s)
    assert base_install < removal < gpu  # faiss-cpu (a base dependency) goes before faiss-gpu
    base = next(rest for kind, rest in instructions if kind == "FROM")
    cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)", base)
    assert cuda and torch.version.cuda, base
    assert cuda.groups() == tuple(torch.version.cuda.split(".")[:2]), (base, torch.version.cuda)


def test_the_commands_the_dockerfile_names_exist():
    text = DOCKERFILE.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    named = re.findall(r"\bmake ([a-z][\w-]*)", comments)
    assert "test-fast" in named
    for target in named:
        assert target in make_targets(), f"make {target}"
    # The Makefile runs .venv/bin/python: the image's venv must be there.
    assert "python3.11 -m venv .venv" in text and "WORKDIR /opt/openvision" in text


def _commands_in_yaml(node) -> list[str]:
    """Every string under a key that holds a command (entrypoint, *_commands)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "entrypoint" and isinstance(value, str):
                found.append(value)
            elif key.endswith("_commands") and isinstance(value, list):
                found += [v for v in value if isinstance(v, str)]
            else:
                found += _commands_in_yaml(value)
    elif isinstance(node, list):
        for value in node:
            found += _commands_in_yaml(value)
    return found


def check_command(command: str) -> None:
    """A `python -m curation|training …`, torchrun, make or ray command that must exist/parse."""
    words = shlex.split(command)
    if words[:3] in (["python", "-m", "curation"], ["python", "-m", "training"]):
        parser = curation_parser() if words[2] == "curation" else training_parser()
        parser.parse_args(words[3:])  # SystemExit on an unknown command or flag
    elif words[0] == "torchrun":
        module = words.index("-m")
        assert words[module + 1] == "training", command
        training_parser().parse_args(words[module + 2 :])
    elif words[0] == "make":
        targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        assert set(targets) <= make_targets(), command
    else:
        assert words[0] in ("ray", "kubectl", "docker", "export"), command


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_yaml_commands_exist(path):
    commands = [c for doc in yaml.safe_load_all(path.read_text()) for c in _commands_in_yaml(doc)]
    for command in commands:
        check_command(command)


def test_the_infra_guide_names_real_make_variables_and_commands():
    guide = (ROOT / "infra" / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", guide, re.S)
    commands = [
        line.split("#")[0].strip().rstrip("&").strip()
        for block in blocks
        for line in re.sub(r"\\\n\s*", " ", block).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    # (python -m … lines are parsed by tests/test_docs_commands.py)
    assert any(command.startswith("make ") for command in commands)
    for command in commands:
        if command.startswith("make "):
            check_command(command)
    # Variables the guide's parameter table gives to make targets exist in the Makefile.
    for row in re.findall(r"^\| (`.*?) \| make (\w+) \|", guide, re.M):
        variables, target = row
        for variable in re.findall(r"`([A-Z_]+)`", variables):
            assert re.search(rf"\$\({variable}\)", makefile), f"{variable} (make {target})"
