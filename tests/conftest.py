import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.minicc.build import build_world
from curation.minicc.server import find_free_port, serve_world
from tests.tests_support import free_port

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Local Ray clusters in tests talk over 127.0.0.1 only, never the machine's outward interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

S3_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1 for the whole session.

    The AWS_* variables point s3fs, pyarrow and Ray workers at it.
    """
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto_server did not start on 127.0.0.1")
            time.sleep(0.2)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture()
def s3_bucket(s3_endpoint, request):
    """A fresh bucket per test, as an s3:// URL."""
    import s3fs

    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    fs = s3fs.S3FileSystem()
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """One local Ray session shared by every test that needs Ray (ray.init costs seconds)."""
    import ray

    from curation.runner import ensure_ray

    # Stage functions defined in test modules are pickled by reference: workers need the test
    # folders that pytest put on sys.path while collecting, and the S3 endpoint.
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.update({key: os.environ[key] for key in S3_ENV_KEYS})
    ensure_ray(num_cpus=2, runtime_env={"env_vars": env})
    yield ray


@pytest.fixture(scope="session")
def ray_session_env(ray_session) -> dict[str, str]:
    """The environment for a child process that joins the session's Ray instance (RAY_ADDRESS,
    the path a cluster user takes) instead of starting a private one: on 2 cores a private
    start and its first workers cost ~10 s of each child's run."""
    return {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}


# One tiny mini Common Crawl per session, built once and served once.
TINY_SEED = 3


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> tuple[Path, dict]:
    """A built tiny world and its description (world.json plus build timings)."""
    root = tmp_path_factory.mktemp("minicc") / "world"
    world = build_world(root, seed=TINY_SEED, scale_name="tiny", port=find_free_port(), processes=2)
    return root, world


@pytest.fixture(scope="session")
def minicc_world(tiny_world) -> Path:
    return tiny_world[0]


@pytest.fixture(scope="session")
def minicc_server(minicc_world):
    """The tiny world's web, served on its loopback addresses for the whole session."""
    with serve_world(minicc_world) as web:
        yield web
