"""Support for the resampling stages' tests (debias, langmix): a small download pool built from
given captions (8x8 JPEGs), and a CLI run killed in the middle of a pass."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from curation import fsio
from curation.download.shard_writer import write_pool_shard


def tiny_jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_text_pool(
    root: Path, texts: list[str], rows_per_shard: int, langs: list[str | None] | None = None
) -> list[str]:
    """POOL/{shard}.tar + .parquet with one success per text (plus one failed download per shard);
    with `langs`, the sidecars' `lang` column holds them (else null, as for an input without
    one). Returns the uids, in the order of `texts`."""
    jpeg = tiny_jpeg(0)
    uids = [hashlib.md5(f"{row}:{text}".encode()).hexdigest() for row, text in enumerate(texts)]
    for shard, first in enumerate(range(0, len(texts), rows_per_shard)):
        shard_id = f"{shard:05d}"
        rows = range(first, min(len(texts), first + rows_per_shard))
        records = [
            {
                "uid": uids[row],
                "key": f"{shard_id}{row - first:05d}",
                "url": f"http://127.0.0.1/{row}.jpg",
                "text": texts[row],
                "status": "success",
                "width": 8,
                "height": 8,
                "original_width": 8,
                "original_height": 8,
                "sha256": hashlib.sha256(jpeg).hexdigest(),
                "lang": langs[row] if langs is not None else None,
            }
            for row in rows
        ]
        records.append(
            {
                "uid": hashlib.md5(f"failed:{shard}".encode()).hexdigest(),
                "key": f"{shard_id}{len(records):05d}",
                "url": f"http://127.0.0.1/failed{shard}.jpg",
                "text": texts[first],
                "status": "failed_to_download",
                "error_message": "HTTP 404",
                "lang": langs[first] if langs is not None else None,
            }
        )
        write_pool_shard(
            lambda name: fsio.open_atomic(str(root / name)), shard_id, records, lambda r: jpeg
        )
    return uids


# Runs the CLI in a child process that SIGKILLs itself once the pass named by its second argument
# has finished its first two shards (the first argument: the stage module whose run_stage is
# wrapped): a deterministic point mid-pass, whatever the machine's speed.
KILL_MID_PASS = """
import importlib, os, signal, sys
module = importlib.import_module(sys.argv.pop(1))
kill_stage = sys.argv.pop(1)
real_run_stage = module.run_stage
def run_stage(stage, fn, tasks, out, **kwargs):
    if stage != kill_stage:
        return real_run_stage(stage, fn, tasks, out, **kwargs)
    real_run_stage(stage, fn, tasks[:2], out, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
module.run_stage = run_stage
# The count passes shared by balance, debias and langmix run through balance's run_stage.
importlib.import_module("curation.stages.balance").run_stage = run_stage
from curation.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_mid_pass_then_resume(module: str, stage: str, args: list[str], out: Path) -> None:
    """Run `python -m curation ARGS` killed after two shards of `stage`, then run it again."""
    killed = subprocess.run(
        [sys.executable, "-c", KILL_MID_PASS, module, stage, *args],
        capture_output=True,
        timeout=400,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert len(list((out / "_stats" / stage).iterdir())) == 2
    resumed = subprocess.run(
        [sys.executable, "-m", "curation", *args], capture_output=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
