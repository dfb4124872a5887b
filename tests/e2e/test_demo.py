"""`make demo`'s chain at the smallest size: every step runs and the summary holds both rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_the_whole_chain_and_compares_both_rounds(tmp_path):
    out = tmp_path / "demo"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "curation",
            "demo",
            "--out",
            str(out),
            "--scale",
            "tiny",
            "--train-steps",
            "3",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["rounds"]) == {"round 0", "round 1"}
    for values in summary["rounds"].values():
        assert values["training samples"] > 0
        assert 0.0 <= values["correctly captioned share"] <= 1.0
        assert "zeroshot top1" in values
    # Round 1 keeps only the top fraction of the pool by the round-0 encoder's score.
    assert (
        summary["rounds"]["round 1"]["training samples"]
        < summary["rounds"]["round 0"]["training samples"]
    )
    assert "train tiny (round 1)" in summary["timings"]
    assert (out / "train" / "metrics.jsonl").exists() and "browse it: make dashboard" in done.stdout
