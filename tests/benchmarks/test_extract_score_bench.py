"""benchmarks/extract.py and benchmarks/score.py at toy sizes: each runs its reference, its limit
pass and ours, and ends with one machine-readable RESULT line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> tuple[str, dict]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), result.stdout[-2000:]
    return result.stdout, json.loads(last.removeprefix("RESULT "))


def check_result(result: dict) -> None:
    assert {"vs_reference", "vs_limit", "target_met"} <= set(result)
    assert result["vs_reference"] > 0 and result["vs_limit"] > 0
    assert isinstance(result["target_met"], bool)


@pytest.mark.slow
@pytest.mark.bench
def test_extract_benchmark_prints_both_limits_and_a_result_line(tmp_path):
    output, result = run_benchmark("extract.py", "--size-mb", "0.6", "--workdir", str(tmp_path))
    check_result(result)
    assert "limit: FastWARC reads every body" in output
    assert "limit: + lexbor parse, css('img')" in output
    assert "ratio ours / limit:" in output


@pytest.mark.slow
@pytest.mark.bench
def test_score_benchmark_prints_the_forward_limit_and_a_result_line():
    output, result = run_benchmark(
        "score.py", "--images", "32", "--shards", "2", "--batch-size", "8", "--model", "tiny-clip"
    )
    check_result(result)
    assert "limit: forward only, pre-decoded" in output
    assert "ratio stage / limit:" in output
    assert "CPU per image (all threads): limit" in output and result["cpu_vs_limit"] > 0
