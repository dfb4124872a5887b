from pathlib import Path

import pytest
from dashboard_run_fixture import build_run


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("dashboard") / "run")
