"""A tiny world of a test module's own, on its own port.

Server tests need fresh fail-first counters and a port nobody else serves, so they do not share
the session's `minicc_server`; the other minicc tests read the shared `tiny_world`.
"""

from __future__ import annotations

from pathlib import Path

from curation.minicc.build import build_world
from curation.minicc.server import find_free_port

PRIVATE_SEED = 11


def build_private_world(tmp_path_factory, name: str) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp(name) / "world"
    world = build_world(
        root, seed=PRIVATE_SEED, scale_name="tiny", port=find_free_port(), processes=1
    )
    return root, world
