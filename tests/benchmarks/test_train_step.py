"""benchmarks/train_step.py at toy sizes: every arm of the step comparison runs and the output
ends with the machine-readable RESULT line `make bench` readers parse."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.bench
def test_train_step_prints_every_arm_and_a_parseable_result_line():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_step.py"),
            "--steps",
            "2",
            "--rounds",
            "1",
            "--batch-size",
            "8",
            "--shard-steps",
            "0",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("RESULT ")
    report = json.loads(lines[-1].removeprefix("RESULT "))
    assert {"vs_reference", "vs_limit", "target_met", "locca_share", "muon_share"} <= set(report)
    assert report["vs_reference"] > 0 and report["vs_limit"] > 0
    assert report["target_met"] == (report["vs_limit"] >= 1.0)
    # Each cost share is measured (a step with the part minus one without), not assumed.
    assert -1 < report["locca_share"] < 1 and -1 < report["muon_share"] < 1
    text = result.stdout
    for arm in ("ours as trained", "AdamW instead of Muon", "no LocCa decoder", "sigmoid only"):
        assert arm in text
    assert "open_clip train_one_epoch" in text and "ours / limit" in text
