"""Session fixtures for curation tests: one tiny mini Common Crawl, built once and served once."""
from __future__ import annotations

from pathlib import Path

import pytest

from curation.minicc.build import build_world
from curation.minicc.server import find_free_port, serve_world

TINY_SEED = 3


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> tuple[Path, dict]:
    """A built tiny world and its description (world.json plus build timings)."""
    root = tmp_path_factory.mktemp("minicc") / "world"
    world = build_world(root, seed=TINY_SEED, scale_name="tiny",
                        port=find_free_port(), processes=2)
    return root, world


@pytest.fixture(scope="session")
def minicc_world(tiny_world) -> Path:
    return tiny_world[0]


@pytest.fixture(scope="session")
def minicc_server(minicc_world):
    """The tiny world's web, served on its loopback addresses for the whole session."""
    with serve_world(minicc_world) as web:
        yield web
