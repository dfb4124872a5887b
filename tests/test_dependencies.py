"""pyproject.toml declares what the code imports, and the code imports what it declares.

The code's imports are read from the source (every `import` statement of curation/, training/ and
benchmarks/, nested and conditional ones included); the standard library and this repository's
own modules are left out, and each module is mapped to the distribution that installs it
(importlib.metadata.packages_distributions). pyproject.toml is read at test time, so a branch
that adds a dependency and its import keeps this test green.
"""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_CODE = ("curation", "training")  # the installed packages: their imports are the base deps
BENCH_CODE = ("benchmarks",)  # their imports beyond the base are the `bench` extra

# Declared dependencies that the code reaches without naming them in an import: distribution ->
# how. Each entry is still required to be declared (and removing it here must be deliberate).
REACHED_WITHOUT_IMPORT = {
    "s3fs": "fsspec loads it for s3:// URLs",
    "aiohttp": "fsspec's http:// filesystem imports it",
    "tensorboard": "imported through torch.utils.tensorboard (training/metrics_log.py)",
    "torchvision": "open_clip imports it; pinned to the build that matches the torch pin",
}


def normalise(name: str) -> str:
    """PEP 503: Pillow == pillow, open_clip_torch == open-clip-torch."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0))


def declared() -> dict[str, set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"base": project.get("dependencies", [])}
    groups.update(project.get("optional-dependencies", {}))
    return {group: {requirement_name(r) for r in reqs} for group, reqs in groups.items()}


def local_modules() -> set[str]:
    """Top-level names this repository provides itself (packages, and the helper modules that
    benchmarks and tests put on sys.path)."""
    names = {path.parent.name for path in REPO.glob("*/__init__.py")}
    for folder in ("benchmarks", "tests"):
        names |= {path.stem for path in (REPO / folder).rglob("*.py")}
    return names


def imported_modules(folders: tuple[str, ...]) -> dict[str, str]:
    """Top-level module -> one file importing it, for every non-stdlib, non-local import."""
    local = local_modules()
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def providers(modules: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the installed distributions that provide it (faiss: faiss-cpu, or faiss-gpu
    where it replaced faiss-cpu as in infra/Dockerfile); a module nothing provides fails the test."""
    installed = packages_distributions()
    missing = {m: f for m, f in modules.items() if m not in installed}
    assert not missing, f"imported, but no installed distribution provides them: {missing}"
    return {m: {normalise(d) for d in installed[m]} for m in modules}


def check(folders: tuple[str, ...], allowed: set[str], own: set[str], exempt=()) -> None:
    """Every import is provided by an `allowed` distribution; every one of `own` is imported."""
    modules = imported_modules(folders)
    provided = providers(modules)
    undeclared = {m: modules[m] for m, dists in provided.items() if not dists & allowed}
    assert not undeclared, f"{'/'.join(folders)} import modules nothing declared provides: " + (
        ", ".join(f"{m} ({f}, from {sorted(provided[m])})" for m, f in undeclared.items())
    )
    unused = own - set().union(*provided.values()) - set(exempt)
    assert not unused, f"declared, but nothing in {'/'.join(folders)} imports: {sorted(unused)}"


def test_every_import_of_the_packages_is_a_base_dependency_and_every_base_dependency_is_used():
    base = declared()["base"]
    check(BASE_CODE, base, base, REACHED_WITHOUT_IMPORT)


def test_every_benchmark_import_is_declared_and_the_bench_extra_is_what_benchmarks_import():
    groups = declared()
    check(BENCH_CODE, groups["base"] | groups["bench"], groups["bench"])


def test_what_is_reached_without_an_import_is_still_declared():
    assert set(REACHED_WITHOUT_IMPORT) <= declared()["base"]


def test_the_dependency_scan_sees_imports_inside_functions_and_maps_module_to_distribution():
    modules = imported_modules(("training",))
    assert "yaml" in modules and "torch" in modules  # lazily imported in places
    assert "training" not in modules and "json" not in modules
    assert providers({"PIL": "x", "yaml": "y"}) == {"PIL": {"pillow"}, "yaml": {"pyyaml"}}
