"""`python -m curation demo`: the whole chain on the built-in mini Common Crawl, in one command.

Build the mini web, serve it on loopback, crawl (extract → dedup → download), curate (balance →
score → neardup → shards), train `tiny`, and print what each step produced and how long it took.
Every step is the same `python -m curation …` / `python -m training …` command a user runs, so
each can be re-run alone; each is resumable, so a re-run of the demo skips finished work.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.dataset as ds

from curation.minicc.build import load_world
from curation.minicc.server import serve_world
from curation.stats import format_summary, read_stage_records, summarize

CURATION = [sys.executable, "-m", "curation"]
TRAINING = [sys.executable, "-m", "training"]


@dataclass
class Timings:
    rows: list[tuple[str, float]] = field(default_factory=list)

    def run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env)
        seconds = time.perf_counter() - started
        self.rows.append((name, seconds))
        if done.returncode != 0:
            raise SystemExit(f"demo step '{name}' failed (exit {done.returncode}); fix it and "
                             f"re-run the demo: finished steps are skipped")
        print(f"=== {name} done in {seconds:.1f} s", flush=True)

    def table(self) -> str:
        lines = [f"{'step':<26}{'seconds':>9}"]
        lines += [f"{name:<26}{seconds:>9.1f}" for name, seconds in self.rows]
        lines.append(f"{'total':<26}{sum(s for _, s in self.rows):>9.1f}")
        return "\n".join(lines)


def count_rows(folder: Path, filter_column: str | None = None) -> int:
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    if not files:
        return 0
    table = ds.dataset(files, format="parquet").to_table(
        columns=[filter_column] if filter_column else [])
    if filter_column is None:
        return table.num_rows
    return sum(1 for value in table.column(filter_column).to_pylist() if value == "success")


def run_demo(out: Path, scale: str, seed: int, train_steps: int, t: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    world_dir = out / "world"
    steps = Timings()
    if not (world_dir / "world.json").exists():
        steps.run("build mini Common Crawl", CURATION + [
            "minicc", "build", "--out", str(world_dir), "--scale", scale, "--seed", str(seed)])
    world = load_world(world_dir)
    pool = out / "pool"
    with serve_world(world_dir) as web:
        print(f"serving the mini web on {', '.join(web.base_urls)} "
              f"(forbidden stand-ins: {', '.join(web.forbidden_urls)})")
        steps.run("extract", CURATION + [
            "extract", "--snapshot", world["snapshot"], "--cc-root", str(world_dir),
            "--out", str(out / "candidates"), "--seed", str(seed)])
        steps.run("dedup", CURATION + [
            "dedup", "--input", str(out / "candidates"), "--out", str(out / "dedup")])
        steps.run("download", CURATION + [
            "download", "--input", str(out / "dedup"), "--out", str(pool),
            "--allow-network", world["allowed_cidr"], "--image-size", "256",
            "--samples-per-shard", "2000", "--seed", str(seed)])
    steps.run("balance (MetaCLIP)", CURATION + [
        "balance", "--input", str(pool), "--metadata", str(world_dir), "--t", str(t),
        "--texts-column", "texts", "--seed", str(seed)])
    scorer = out / "scorer-random-init.safetensors"
    if not scorer.exists():
        steps.run("scorer (random init)", CURATION + [
            "score", "--model", "ViT-B-32", "--init-random-weights", str(scorer)])
    steps.run("score (CLIP)", CURATION + [
        "score", "--pool", str(pool), "--model", "ViT-B-32", "--weights", str(scorer),
        "--tag", "round0"])
    steps.run("neardup + decontaminate", CURATION + [
        "neardup", "--pool", str(pool), "--world", str(world_dir)])
    steps.run("training shards", CURATION + [
        "shards", "--pool", str(pool), "--out", str(out / "train_shards"),
        "--require", "balance,neardup", "--samples-per-shard", "2000", "--seed", str(seed)])
    steps.run("train tiny", TRAINING + [
        "train", "--preset", "tiny", "--data", str(out / "train_shards" / "*.tar"),
        "--grounding", str(world_dir / "grounding" / "*.tar"), "--out", str(out / "train"),
        "--steps", str(train_steps)])

    print("\n=== stage statistics (python -m curation stats " + str(out) + ")")
    print(format_summary(summarize(read_stage_records(str(out)))))
    print("\n=== timings")
    print(steps.table())
    summary = {"out": str(out), "scale": scale, "world_counts": world.get("counts", {}),
               "pool_successes": count_rows(pool, "status"),
               "train_samples": count_rows(out / "train_shards"),
               "timings": dict(steps.rows)}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nbrowse it: make dashboard RUN={out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the whole chain on the built-in mini Common Crawl")
    parser.add_argument("--out", default="demo-run", help="run folder")
    parser.add_argument("--scale", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--t", type=float, default=300.0, help="MetaCLIP balancing threshold")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    run_demo(Path(args.out).resolve(), args.scale, args.seed, args.train_steps, args.t)
    return 0
