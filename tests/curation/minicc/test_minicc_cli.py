"""`python -m curation minicc serve` as a process: ready state, answers, clean stop on SIGTERM."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from private_world import build_private_world

from curation.minicc import cli

REPO_ROOT = Path(__file__).resolve().parents[3]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_serve_process_writes_ready_state_answers_and_stops_on_sigterm(tmp_path_factory):
    root, world = build_private_world(tmp_path_factory, "minicc-cli")
    log = root.parent / "cli-requests.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "curation",
            "minicc",
            "serve",
            "--root",
            str(root),
            "--log",
            str(log),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    state_path = root / "server.json"
    try:
        deadline = time.monotonic() + 60
        while not state_path.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.1)
        state = json.loads(state_path.read_text())
        assert state["pid"] == process.pid and state["port"] == world["port"]
        connection = http.client.HTTPConnection(world["hosts"][1], world["port"], timeout=2)
        connection.request("GET", "/robots.txt", headers={"User-Agent": "cli-test"})
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "serving 8 hosts" in out and "stopped" in out
    assert not state_path.exists()
    assert json.loads(log.read_text().splitlines()[-1])["user_agent"] == "cli-test"


def test_build_command_reports_a_bad_output_folder(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("not a build")
    args = _parse(["minicc", "build", "--out", str(tmp_path), "--scale", "tiny"])
    assert args.func(args) == 2
    assert "not a minicc build" in capsys.readouterr().err


def test_serve_command_reports_a_missing_world(tmp_path, capsys):
    args = _parse(["minicc", "serve", "--root", str(tmp_path)])
    assert args.func(args) == 2
    assert "build the world first" in capsys.readouterr().err


@pytest.mark.parametrize("scale", ["tiny", "small", "medium"])
def test_build_command_accepts_every_scale(scale):
    assert _parse(["minicc", "build", "--out", "x", "--scale", scale]).scale == scale
