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

from curation.jobs import absolute_paths, job_entrypoint, jobs_address, runtime_env
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


def test_the_entrypoint_runs_the_given_interpreter_with_python3_as_fallback():
    entrypoint = job_entrypoint(["stats", "/data/run"], "/opt/venv/bin/python")
    assert entrypoint.startswith("PY=/opt/venv/bin/python; ")
    assert "command -v python3" in entrypoint
    assert entrypoint.endswith('exec "$PY" -m curation stats /data/run')
    done = subprocess.run(
        [
            "sh",
            "-c",
            job_entrypoint(["--help"], "/no/such/python").replace("-m curation --help", "-V"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("Python 3")


@pytest.mark.parametrize(
    ("command", "expected", "relative"),
    [
        (["stats", "demo-run/pool"], ["stats", f"{REPO}/demo-run/pool"], "demo-run/pool"),
        (["download", "--out", "pool"], ["download", "--out", f"{REPO}/pool"], "pool"),
        (["download", "--out=pool"], ["download", f"--out={REPO}/pool"], "pool"),
        (["stats", "README.md"], ["stats", f"{REPO}/README.md"], "README.md"),  # exists here
    ],
)
def test_relative_local_paths_are_made_absolute(command, expected, relative, monkeypatch):
    monkeypatch.chdir(REPO)
    assert absolute_paths(command) == (expected, [relative])


def test_absolute_paths_urls_and_plain_words_are_kept(monkeypatch):
    monkeypatch.chdir(REPO)
    command = [
        "extract",
        "--snapshot",
        "CC-MAIN-2024-10",
        "--input",
        "s3://bucket/pool",
        "--out",
        "/data/balanced",
        "--t",
        "2",
        "--model",
        "openvision-siglip2",
    ]
    assert absolute_paths(command) == (command, [])


def listening_addresses(pids: set[int]) -> list[str]:
    """host:port of every listening TCP socket the processes hold (from /proc, as `ss` does)."""
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(_address(fields[1]))
    return found


def _address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return f"[{socket.inet_ntop(socket.AF_INET6, words)}]:{int(port, 16)}"


LIST_LISTENERS = """
import os, sys
from curation.runner import ensure_ray
from tests.curation.test_jobs import descendants, listening_addresses
import ray
ensure_ray()
ray.get([ray.remote(lambda: 1).remote() for _ in range(2)])
print("\\n".join(listening_addresses(descendants(os.getpid()))))
ray.shutdown()
"""


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_the_local_default_ray_instance_listens_on_loopback_only():
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", LIST_LISTENERS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    addresses = done.stdout.split()
    assert len(addresses) >= 3  # GCS, raylet, workers at least
    loopback = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
    assert [a for a in addresses if not a.startswith(loopback)] == []


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
    token = os.urandom(16).hex()
    # The head asks for a token (Ray's token authentication); it listens on loopback only, and its
    # PATH has no `python` of this virtualenv: the job must run this interpreter by its path.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PATH": "/usr/bin:/bin",
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
        # The client as Ray documents it: the token in RAY_AUTH_TOKEN (submit sets the mode), no
        # token file of this machine's own in HOME.
        client = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        client.update(RAY_ADDRESS=f"http://127.0.0.1:{dashboard_port}", HOME=str(tmp_path))

        def submit(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "curation", "submit", "--", "stats", str(run)],
                cwd=REPO,
                env={**client, **extra_env},
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )

        refused = submit({})
        assert refused.returncode == 2 and "ray get-auth-token" in refused.stderr
        done = submit({"RAY_AUTH_TOKEN": token})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "SUCCEEDED" in done.stdout
        summary = [line for line in done.stdout.splitlines() if line.startswith("one ")]
        assert summary and summary[0].split()[1:4] == ["2", "2", "2"]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
