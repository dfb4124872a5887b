"""Session fixtures for curation tests: one tiny mini Common Crawl, built once and served once."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from curation.minicc.build import build_world
from curation.minicc.scales import FORBIDDEN_ADDRESSES, HOSTS
from curation.minicc.server import serve_world

TINY_SEED = 3


def port_free_on_all_addresses() -> int:
    """A port that every simulated host and the forbidden address can bind."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            for address in (*HOSTS, *FORBIDDEN_ADDRESSES):
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port is free on every mini web address")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> tuple[Path, dict]:
    """A built tiny world and its description (world.json plus build timings)."""
    root = tmp_path_factory.mktemp("minicc") / "world"
    world = build_world(root, seed=TINY_SEED, scale_name="tiny",
                        port=port_free_on_all_addresses(), processes=2)
    return root, world


@pytest.fixture(scope="session")
def minicc_world(tiny_world) -> Path:
    return tiny_world[0]


@pytest.fixture(scope="session")
def minicc_server(minicc_world):
    """The tiny world's web, served on its loopback addresses for the whole session."""
    with serve_world(minicc_world) as web:
        yield web
