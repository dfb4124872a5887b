"""benchmarks/gpu_check.sh --dry-run: every code path of the GPU check (eager and compiled
training steps, peak memory with and without activation checkpointing, CLIP scoring, faiss
flat and IVF indexes) runs on the CPU at tiny sizes and reports every number."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.bench
def test_the_dry_run_executes_every_measurement(tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--json", str(out)],
        env={**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    for mode in ("eager", "compiled"):
        train = report[f"tiny_train_{mode}"]
        assert train["samples_per_s_per_gpu"] > 0 and train["batch"] == 8
        assert math.isnan(train["mfu"])  # no known peak for a CPU
    assert {"tiny_memory_ac", "tiny_memory_no_ac"} <= set(report)
    assert report["clip_scoring"]["images_per_s"] > 0
    faiss = report["faiss"]
    for name in ("flat", "ivf"):
        assert faiss[f"{name}_build_vectors_per_s"] > 0
        assert faiss[f"{name}_search_queries_per_s"] > 0
    assert faiss["flat_self_recall@10"] == 1.0  # exact search finds each query itself
    printed = result.stdout
    for line in ("tiny_train_eager:", "tiny_train_compiled:", "tiny_memory_ac:", "CLIP scoring"):
        assert line in printed


def test_without_a_gpu_the_check_says_so_and_passes(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "no CUDA device" in result.stdout
