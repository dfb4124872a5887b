import os
import sys

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session shared by every test that needs Ray (ray.init costs seconds)."""
    import ray

    if not ray.is_initialized():
        # Stage functions defined in test modules are pickled by reference: workers need the
        # test folders that pytest put on sys.path while collecting.
        worker_path = os.pathsep.join(p for p in sys.path if p)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 address=os.environ.get("RAY_ADDRESS") or "local",
                 runtime_env={"env_vars": {"PYTHONPATH": worker_path}})
    yield ray
