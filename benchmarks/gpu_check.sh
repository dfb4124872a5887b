#!/usr/bin/env bash
# GPU readiness on one GPU in at most ~8 minutes on an H100 (see benchmarks/gpu_check.py):
# b16 samples/s/GPU and MFU (bf16, LocCa on, eager and compiled), so400m peak memory with
# activation checkpointing, CLIP-scoring images/s, faiss-gpu build and search rates.
#   benchmarks/gpu_check.sh              on the machine's first GPU
#   benchmarks/gpu_check.sh --dry-run    every code path on the CPU at tiny sizes
#   benchmarks/gpu_check.sh --json F     also write the numbers to F
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
exec "$PY" benchmarks/gpu_check.py "$@"
