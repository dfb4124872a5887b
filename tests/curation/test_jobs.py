import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from curation.jobs import jobs_address, runtime_env
from curation.runner import ShardContext, ShardTask, ensure_ray, run_stage
from tests.tests_support import free_port

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert process.poll() is None, "ray start --head exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the Ray dashboard did not open port {port}")


class OneRow:
    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        ctx.stats.rows_in = ctx.stats.rows_out = 1
        ctx.write_parquet(f"{task.shard_id}.parquet", pa.table({"x": [1]}))


def test_only_http_addresses_are_jobs_addresses(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert jobs_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert jobs_address() is None


def test_a_jobs_address_is_refused_as_a_driver_address_with_advice(monkeypatch):
    import ray

    # Decide as a fresh process would, even when this test session already runs Ray.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(RuntimeError, match="curation submit"):
        ensure_ray()


def test_runtime_env_ships_credentials_but_not_the_venv(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    env = runtime_env(".")
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert ".venv" in env["excludes"]


@pytest.mark.slow
def test_submit_runs_the_command_on_a_cluster_through_the_jobs_api(tmp_path):
    run = tmp_path / "run"
    run_stage(
        "one",
        OneRow(),
        [ShardTask("00000"), ShardTask("00001")],
        str(run),
        use_ray=False,
        progress=False,
    )
    dashboard_port, gcs_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    # Ray's dashboard asks for a token; the cluster and the submitting client share one.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.urandom(16).hex(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    # `ray start --block` keeps the head in this child's process group, so the test stops exactly
    # this cluster (never `ray stop`, which would kill every Ray instance on the machine).
    # Every port of its own: the test session's Ray instance already holds the default agent ports.
    agent_ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
        )
    ]
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--num-cpus=1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            *agent_ports,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(dashboard_port, head)
        env["RAY_ADDRESS"] = f"http://127.0.0.1:{dashboard_port}"
        done = subprocess.run(
            [sys.executable, "-m", "curation", "submit", "--", "stats", str(run)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "SUCCEEDED" in done.stdout
        summary = [line for line in done.stdout.splitlines() if line.startswith("one ")]
        assert summary and summary[0].split()[1:4] == ["2", "2", "2"]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
