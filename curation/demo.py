"""`python -m curation demo`: the whole chain on the built-in mini Common Crawl, in one command.

Build the mini web and serve it on loopback; crawl it (extract → dedup → download); curate
(MetaCLIP balance → near-dup + decontamination → training shards). Three arms then train `tiny`
at equal steps:
- round0: the balanced pool, no caption filter;
- round1: the pool's top fraction by scorers trained like round 0. By default that is
  cross-fit: round 0's pairs are split into folds by a seeded uid hash, a scorer trains on all
  but one fold and scores that one, so no pair is scored by a model that learnt it (the round-0
  encoder itself, ~20 epochs on those pairs, scores the wrong ones it learnt high: report.json's
  `scoring` holds what each would keep; --scorer-folds 1 keeps by the round-0 encoder). With
  --scorer-seeds N, N scorers of other training seeds score each fold and a pair's score is
  their mean (one scorer's scores are noisy: two seeds' correlate ~0.5);
- reference: round 0's shards filtered by the world's truth table (only correctly captioned
  pairs), the ceiling a perfect caption filter reaches.
A `tiny` run keeps one of two cores busy, so two things run at once where nothing waits on
them: the cross-fit scorers (they need only round 0's shards) train beside round 0, and the
reference arm beside round 1 (without cross-fitting, beside round 0), with the filters round 1
only reports (detect-faces, debias, langmix); their output goes to DEMO_DIR/logs/, and every
process runs one torch thread. Each arm is evaluated on the world's held-out sets.
DEMO_DIR/report.json holds, per arm, its training-sample count, the share of its pairs the
truth calls correctly captioned, and every eval metric with its standard error
(curation/demo_report.py); under "comparisons", round 1 minus round 0 and minus the reference on
zero-shot and T->I R@1, each difference with its paired standard error (the arms are scored on
the same eval trials). The demo prints both as tables. Those standard errors are the eval
sets'; retraining an arm on another seed moves it more. --arm-seeds N trains every arm on
training seeds 0..N-1 (the same shards) and adds "comparisons_over_seeds": each seed's
difference, their mean and its standard error over seeds.

Every step is the same `python -m curation …` / `python -m training …` command a user runs, and
every step is resumable: re-running the demo skips finished work.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from curation.demo_filters import run_filters
from curation.demo_report import (
    arm_metrics,
    arms_table,
    comparisons_table,
    correct_pairs,
    correctly_captioned_share,
    kept_correct_shares,
    latest_eval,
    paired_comparisons,
    seed_comparisons,
    seed_comparisons_table,
    write_filtered_shards,
    write_reference_shards,
)
from curation.minicc.build import WORLD_FILE, load_world, stale_world_reason
from curation.minicc.scales import DEFAULT_PORT
from curation.minicc.server import serve_world
from curation.score.shard_scoring import crossfit_folds
from curation.stages.common import RunOptions
from curation.stats import format_summary, read_stage_records, summarize

CURATION = [sys.executable, "-m", "curation"]
TRAINING = [sys.executable, "-m", "training"]
RANDOM_SCORER = "tiny-clip"
EXPORTED_SCORER = "openvision-siglip2"


@dataclass
class Steps:
    rows: list[tuple[str, float]] = field(default_factory=list)
    began: float = field(default_factory=time.perf_counter)

    def run(self, name: str, argv: list[str]) -> None:
        """Run one step's command. `python -m curation …` steps run in this process, through the
        same argument parser and driver a user's command goes through, so they share one Ray
        session: a fresh process per stage spent ~5 s starting Ray and importing, more than most
        stages take on the mini web. Training commands keep their own process (torch's thread
        settings and memory are per run)."""
        print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
        started = time.perf_counter()
        if argv[: len(CURATION)] == CURATION:
            code = _run_curation_here(argv[len(CURATION) :])
        else:
            code = subprocess.run(argv, check=False).returncode
        seconds = time.perf_counter() - started
        self.rows.append((name, seconds))
        if code != 0:
            raise SystemExit(
                f"demo step '{name}' failed (exit {code}); fix it and "
                f"re-run the demo: finished steps are skipped"
            )
        print(f"=== {name} done in {seconds:.1f} s", flush=True)

    def start(self, name: str, argvs: list[list[str]], log: Path) -> Beside:
        """Start commands (training ones) one after another in a background thread, their
        output to `log`, while the demo goes on: on 2 cores a `tiny` run keeps one core busy
        (one torch thread beside one loader worker), so an arm that needs nothing from the
        steps after it trains beside them. `finish` waits for it."""
        print(f"\n=== {name} (beside the next steps; log: {log})", flush=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        beside = Beside(name, log)

        def run_all() -> None:
            with log.open("ab") as sink:
                for argv in argvs:
                    with beside.lock:
                        if beside.stopped:
                            return
                        beside.process = subprocess.Popen(
                            argv, stdout=sink, stderr=subprocess.STDOUT
                        )
                    code = beside.process.wait()
                    if code != 0:
                        beside.failed = f"{' '.join(argv[1:4])} exited {code}"
                        return

        beside.thread = threading.Thread(target=run_all, name=name, daemon=True)
        beside.thread.start()
        # A demo that stops on an error (or Ctrl-C) must not leave the arm training on: a re-run
        # would start a second trainer on the same run folder.
        atexit.register(beside.stop)
        return beside

    def finish(self, beside: Beside) -> None:
        assert beside.thread is not None
        beside.thread.join()
        atexit.unregister(beside.stop)
        seconds = time.perf_counter() - beside.started
        self.rows.append((beside.name, seconds))
        if beside.failed:
            raise SystemExit(
                f"demo step '{beside.name}' failed ({beside.failed}; its log: {beside.log}); "
                f"fix it and re-run the demo: finished steps are skipped"
            )
        print(f"=== {beside.name} done in {seconds:.1f} s (beside the steps above)", flush=True)

    def table(self) -> str:
        lines = [f"{'step':<42}{'seconds':>9}"]
        lines += [f"{name:<42}{seconds:>9.1f}" for name, seconds in self.rows]
        lines.append(f"{'total (wall clock)':<42}{self.wall():>9.1f}")
        return "\n".join(lines)

    def wall(self) -> float:
        """Seconds since the steps began: arms that ran beside others count once."""
        return time.perf_counter() - self.began


@dataclass
class Beside:
    """An arm running in the background (Steps.start)."""

    name: str
    log: Path
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None
    failed: str | None = None
    process: subprocess.Popen | None = None
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        """Stop the arm: no further command starts, the running one is terminated."""
        with self.lock:
            self.stopped = True
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
        if self.thread is not None:
            self.thread.join(timeout=30)


def _run_curation_here(args: list[str]) -> int:
    """`python -m curation ARGS` in this process: its exit code, 1 for an uncaught error (its
    traceback printed, as the interpreter would)."""
    from curation.cli import main

    try:
        return main(args)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def crawl(steps: Steps, out: Path, world_dir: Path, world: dict, seed: int) -> None:
    with serve_world(world_dir) as web:
        print(
            f"serving the mini web on {', '.join(web.base_urls)} "
            f"(forbidden stand-ins: {', '.join(web.forbidden_urls)})"
        )
        steps.run(
            "extract",
            CURATION
            + [
                "extract",
                "--snapshot",
                world["snapshot"],
                "--cc-root",
                str(world_dir),
                "--out",
                str(out / "candidates"),
                "--seed",
                str(seed),
            ],
        )
        steps.run(
            "dedup",
            CURATION + ["dedup", "--input", str(out / "candidates"), "--out", str(out / "dedup")],
        )
        steps.run(
            "download",
            CURATION
            + [
                "download",
                "--input",
                str(out / "dedup"),
                "--out",
                str(out / "pool"),
                "--allow-network",
                world["allowed_cidr"],
                "--image-size",
                "256",
                "--user-agent-token",
                world["robots"]["agent_token"],
                "--read-timeout",
                "4",
                "--samples-per-shard",
                "1000",
                "--seed",
                str(seed),
            ],
        )


def train_commands(
    shards: Path, world_dir: Path, run: Path, train_steps: int, overrides: tuple[str, ...] = ()
) -> list[list[str]]:
    """An arm's two commands: train `tiny` on `shards`, then evaluate it on the world's sets."""
    train = TRAINING + ["train", "--preset", "tiny", "--data", str(shards / "*.tar")]
    train += ["--grounding", str(world_dir / "grounding" / "*.tar")]
    train += ["--out", str(run), "--steps", str(train_steps), *overrides]
    return [train, TRAINING + ["eval", "--ckpt", str(run), "--data", str(world_dir / "eval")]]


def score_args(pool: Path, out: Path, tag: str, top_fraction: float) -> list[str]:
    """A `curation score` of the pool with an exported `tiny` (weights flags to add)."""
    return [
        "score",
        "--pool",
        str(pool),
        "--out",
        str(out),
        "--model",
        EXPORTED_SCORER,
        "--tag",
        tag,
        "--top-fraction",
        str(top_fraction),
    ]


def fold_scorer_jobs(
    out: Path,
    round0_shards: Path,
    world_dir: Path,
    folds: int,
    seed: int,
    scorer_steps: int,
    scorer_seeds: int,
) -> tuple[list[tuple[str, list[list[str]]]], list[Path]]:
    """Cross-fitting's scorers: for each training seed 0..scorer_seeds-1 and fold i, a `tiny`
    trains like round 0 (`scorer_steps` steps) on round 0's pairs outside fold i (score's
    --fold-seed hash of the uid), and is exported. They need only round 0's shards. Returns
    the jobs (name, [train, export]) and the exports, seed by seed, fold by fold: the order
    `score --folds` reads (file J scores fold J % folds). Folders are named by the split and
    the steps, so a demo resumed with other settings trains new scorers instead of reusing
    ones that saw the rows they would score."""
    home = out / "scorer_folds" / f"{folds}_folds_{scorer_steps}_steps"
    shard_sets = []
    for fold in range(folds):

        def outside(sidecar: pa.Table, fold: int = fold) -> pa.Array:
            return pa.array(crossfit_folds(sidecar["uid"].to_pylist(), folds, seed) != fold)

        shards = home / f"shards_{fold}"
        write_filtered_shards(round0_shards, shards, outside, "_fold.json")
        shard_sets.append(shards)
    jobs, exports = [], []
    for member in range(scorer_seeds):
        for fold in range(folds):
            run = home / f"run_{fold}_seed{member}"
            exports.append(run / "open_clip")
            train = train_commands(
                shard_sets[fold], world_dir, run, scorer_steps, (f"seed={member}",)
            )[0]
            export = TRAINING + ["export", "--ckpt", str(run), "--format", "open_clip"]
            jobs.append(
                (
                    f"scorer of fold {fold}, seed {member}",
                    [train, export + ["--out", str(exports[-1])]],
                )
            )
    return jobs, exports


def plan_lanes(jobs: list, head_start: float) -> tuple[list, list]:
    """Split equal-cost jobs (one `tiny` training each) over two lanes: one beside the steps,
    one here after `head_start` trainings' worth of other work. Each job goes to the lane that
    frees first."""
    beside, here = [], []
    load_beside, load_here = 0.0, head_start
    for job in jobs:
        if load_beside <= load_here:
            beside.append(job)
            load_beside += 1
        else:
            here.append(job)
            load_here += 1
    return beside, here


def start_lane(
    steps: Steps, verb: str, jobs: list[tuple[str, list[list[str]]]], log: Path
) -> Beside | None:
    """Start `jobs` (name, commands), one after another, beside the steps (None for none)."""
    if not jobs:
        return None
    return steps.start(
        f"{verb} tiny ({'; '.join(name for name, _ in jobs)})",
        [command for _, commands in jobs for command in commands],
        log,
    )


def run_here(steps: Steps, jobs: list[tuple[str, list[list[str]]]], verbs: tuple[str, ...]) -> None:
    """Run `jobs` (name, commands) here, one after another; command k of a job is the step
    "{verbs[k]} ({name})"."""
    for name, commands in jobs:
        for verb, command in zip(verbs, commands, strict=True):
            steps.run(f"{verb} ({name})", command)


ARM_STEPS = ("train tiny", "evaluate")  # an arm's commands (train_commands)
SCORER_STEPS = ("train tiny", "export tiny")  # a cross-fit scorer's (fold_scorer_jobs)


def train_other_seeds(
    steps: Steps,
    out: Path,
    world_dir: Path,
    arm_runs: dict[str, tuple[Path, Path]],
    train_steps: int,
    arm_seeds: int,
) -> dict[str, list[Path]]:
    """Every arm again on training seeds 1..arm_seeds-1 (`seed=K`: another init and batch
    order, the same shards), each run beside its own folder (RUN_seedK), in two lanes.
    Returns each arm's extra run folders, seed by seed."""
    runs: dict[str, list[Path]] = {name: [] for name in arm_runs}
    jobs = []
    for seed in range(1, arm_seeds):
        for name, (shards, run) in arm_runs.items():
            seed_run = run.with_name(f"{run.name}_seed{seed}")
            runs[name].append(seed_run)
            commands = train_commands(shards, world_dir, seed_run, train_steps, (f"seed={seed}",))
            jobs.append((f"{name}, training seed {seed}", commands))
    beside_jobs, here_jobs = plan_lanes(jobs, head_start=0)
    lane = start_lane(steps, "train + evaluate", beside_jobs, out / "logs" / "arm_seeds.log")
    run_here(steps, here_jobs, ARM_STEPS)
    if lane is not None:
        steps.finish(lane)
    return runs


def train_and_evaluate(
    steps: Steps, name: str, shards: Path, world_dir: Path, run: Path, train_steps: int
) -> None:
    run_here(steps, [(name, train_commands(shards, world_dir, run, train_steps))], ARM_STEPS)


def run_demo(
    out: Path,
    scale: str,
    seed: int,
    train_steps: int,
    t: float,
    top_fraction: float,
    port: int = DEFAULT_PORT,
    scorer_folds: int = 3,
    scorer_seeds: int = 1,
    scorer_steps: int | None = None,
    arm_seeds: int = 1,
) -> None:
    if min(scorer_folds, scorer_seeds, arm_seeds) < 1:
        raise SystemExit(
            f"demo: --scorer-folds, --scorer-seeds and --arm-seeds must be at least 1, "
            f"not {scorer_folds}, {scorer_seeds} and {arm_seeds}"
        )
    scorer_steps = scorer_steps or train_steps
    out.mkdir(parents=True, exist_ok=True)
    world_dir, pool = out / "world", out / "pool"
    steps = Steps()
    if not (world_dir / WORLD_FILE).exists():
        steps.run(
            "build mini Common Crawl",
            CURATION
            + ["minicc", "build", "--out", str(world_dir), "--scale", scale, "--seed", str(seed)]
            + ["--port", str(port)],
        )
    elif reason := stale_world_reason(world_dir, seed, scale):
        # Every stage output in the folder was computed from that world: resuming would mix them.
        raise SystemExit(
            f"demo: {reason}, and the stages under {out} were computed from it. "
            f"Remove {out} (or pass --out NEW_FOLDER) and run the demo again."
        )
    world = load_world(world_dir)
    crawl(steps, out, world_dir, world, seed)

    steps.run(
        "balance (MetaCLIP)",
        CURATION
        + [
            "balance",
            "--input",
            str(pool),
            "--metadata",
            str(world_dir),
            "--t",
            str(t),
            "--texts-column",
            "texts",
            "--seed",
            str(seed),
        ],
    )
    random_weights = out / "scorer-random" / "tiny-clip.safetensors"
    if not random_weights.exists():
        steps.run(
            "random scorer (signatures only)",
            CURATION
            + ["score", "--model", RANDOM_SCORER, "--init-random-weights", str(random_weights)],
        )
    signatures = pool / "curation" / "score_signatures"
    steps.run(
        "pixel signatures (random scorer)",
        CURATION
        + [
            "score",
            "--pool",
            str(pool),
            "--out",
            str(signatures),
            "--model",
            RANDOM_SCORER,
            "--weights",
            str(random_weights),
            "--tag",
            "random",
        ],
    )
    steps.run(
        "near-dup + decontaminate",
        CURATION
        + ["neardup", "--pool", str(pool), "--scores", str(signatures), "--world", str(world_dir)],
    )

    round0_shards, round0 = out / "train_shards_round0", out / "train_round0"
    steps.run(
        "training shards (round 0)",
        CURATION
        + [
            "shards",
            "--pool",
            str(pool),
            "--out",
            str(round0_shards),
            "--require",
            "balance,neardup",
            "--samples-per-shard",
            "1000",
            "--seed",
            str(seed),
        ],
    )
    # The reference arm (round 0's correctly captioned pairs) and the cross-fit scorers need
    # only round 0's shards. A `tiny` run keeps one core busy, so the scorers train beside
    # round 0 (round 0's training, evaluation, export and scoring are ~1.25 trainings' work),
    # and the reference arm beside round 1; without cross-fitting it trains beside round 0.
    reference_shards, reference = out / "train_shards_reference", out / "train_reference"
    correct = correct_pairs(world_dir)
    write_reference_shards(round0_shards, reference_shards, correct)
    reference_job = [
        ("reference", train_commands(reference_shards, world_dir, reference, train_steps))
    ]
    reference_log = out / "logs" / "reference.log"
    scorer_jobs: list[tuple[str, list[list[str]]]] = []
    fold_exports: list[Path] = []
    if scorer_folds > 1:
        scorer_jobs, fold_exports = fold_scorer_jobs(
            out, round0_shards, world_dir, scorer_folds, seed, scorer_steps, scorer_seeds
        )
    beside_jobs, here_jobs = plan_lanes(scorer_jobs, head_start=1.25)
    scorers_beside = start_lane(steps, "train + export", beside_jobs, out / "logs" / "scorers.log")
    # Without scorers beside round 0, the reference arm takes that lane.
    reference_arm = None
    if scorers_beside is None:
        reference_arm = start_lane(steps, "train + evaluate", reference_job, reference_log)
    train_and_evaluate(steps, "round 0", round0_shards, world_dir, round0, train_steps)

    exported = round0 / "open_clip"
    steps.run(
        "export round-0 encoder (open_clip)",
        TRAINING
        + ["export", "--ckpt", str(round0), "--format", "open_clip", "--out", str(exported)],
    )
    # The round-0 encoder scores the pool: the NSFW head reads these embeddings, and the keep
    # flags say what this scorer would keep. It trained ~20 epochs on round 0's pairs, wrong
    # ones included, and scores those it learnt high (see scorer_folds): with scorer_folds > 1
    # round 1 keeps by cross-fit scores instead, and the report holds both.
    in_sample = pool / "curation" / ("score" if scorer_folds == 1 else "score_round0")
    steps.run(
        "score with the round-0 encoder",
        CURATION
        + score_args(pool, in_sample, "round0", top_fraction)
        + ["--weights", str(exported / "open_clip_model.safetensors")]
        + ["--model-config", str(exported / "open_clip_config.json")],
    )
    filter_args = (str(pool), str(world_dir), str(out / "filters"), seed)
    filter_options = RunOptions(seed=seed, use_ray=False)
    started = time.perf_counter()
    print("\n=== responsible-data filter round 1 requires (nsfw-fit + nsfw)")
    filters = run_filters(*filter_args, filter_options, scores=str(in_sample), only=("nsfw",))
    steps.rows.append(("filter: nsfw", time.perf_counter() - started))
    run_here(steps, here_jobs, SCORER_STEPS)
    if scorers_beside is not None:
        steps.finish(scorers_beside)
    if fold_exports:
        steps.run(
            f"score, cross-fit ({len(fold_exports)} scorers, {scorer_folds} folds)",
            CURATION
            + score_args(pool, pool / "curation" / "score", "crossfit", top_fraction)
            + ["--fold-weights", *(str(e / "open_clip_model.safetensors") for e in fold_exports)]
            + ["--folds", str(scorer_folds), "--fold-seed", str(seed), "--model-config"]
            + [str(fold_exports[0] / "open_clip_config.json")],
        )
    # Round 1 also drops what the NSFW head flags (when it ran); the other filters are reported.
    require = "balance,score,neardup" + ("" if "off" in filters["nsfw"] else ",nsfw")
    round1_shards, round1 = out / "train_shards", out / "train"
    steps.run(
        "training shards (round 1)",
        CURATION
        + [
            "shards",
            "--pool",
            str(pool),
            "--out",
            str(round1_shards),
            "--require",
            require,
            "--samples-per-shard",
            "1000",
            "--seed",
            str(seed),
        ],
    )
    # The filters round 1 only reports (detect-faces is ~45 s of MTCNN on the small pool) run
    # while round 1 trains (and the reference arm, when the cross-fit scorers took its place
    # beside round 0).
    if reference_arm is None:
        reference_arm = start_lane(steps, "train + evaluate", reference_job, reference_log)
    round1_arm = steps.start(
        "train + evaluate tiny (round 1)",
        train_commands(round1_shards, world_dir, round1, train_steps),
        out / "logs" / "round1.log",
    )
    started = time.perf_counter()
    print("\n=== responsible-data filters round 1 reports (detect-faces, debias, langmix)")
    filters.update(run_filters(*filter_args, filter_options, only=("faces", "debias", "language")))
    steps.rows.append(("filters: faces, debias, langmix", time.perf_counter() - started))
    print(json.dumps(filters, indent=1), flush=True)
    assert reference_arm is not None  # started beside round 0 or round 1
    steps.finish(reference_arm)
    steps.finish(round1_arm)
    arm_runs = {
        "round0": (round0_shards, round0),
        "round1": (round1_shards, round1),
        "reference": (reference_shards, reference),
    }
    seed_runs = train_other_seeds(steps, out, world_dir, arm_runs, train_steps, arm_seeds)

    eval_sizes = world.get("counts", {}).get("eval", {})
    arms: dict[str, dict] = {}
    evals: dict[str, dict] = {}
    evals_by_seed: dict[str, list[dict]] = {}
    for name, (shards, run) in arm_runs.items():
        samples, share = correctly_captioned_share(shards, correct)
        evals[name] = latest_eval(run)
        arms[name] = {
            "samples": samples,
            "correct_caption_share": share,
            "metrics": arm_metrics(evals[name], eval_sizes),
        }
        evals_by_seed[name] = [evals[name]] + [latest_eval(r) for r in seed_runs[name]]
    # The arms are scored on the same eval sets: their differences get paired standard errors.
    pairs = [("round1", "round0"), ("round1", "reference")]
    comparisons = paired_comparisons(evals, pairs)
    # With --arm-seeds N, the same differences seed by seed: what retraining moves.
    over_seeds = seed_comparisons(evals_by_seed, pairs) if arm_seeds > 1 else {}
    candidates = [stage for stage in require.split(",") if stage != "score"]
    score_dirs = {"round0_encoder": in_sample}
    if scorer_folds > 1:
        score_dirs["cross_fit"] = pool / "curation" / "score"
    scoring: dict = {
        "folds": scorer_folds,
        "seeds": scorer_seeds if scorer_folds > 1 else 0,
        "scorer_steps": scorer_steps if scorer_folds > 1 else 0,
        **kept_correct_shares(pool, score_dirs, candidates, correct),
    }
    print(f"\n=== stage statistics (python -m curation stats {out})")
    print(format_summary(summarize(read_stage_records(str(out)))))
    print(
        "\n=== does curation make a better model? round0: the balanced pool; round1: its top "
        f"{top_fraction:.0%} by "
        + (
            f"cross-fit scorers ({scorer_folds} folds x {scorer_seeds} seeds, mean score)"
            if scorer_folds > 1
            else "the round-0 encoder"
        )
        + "; reference: round 0's pairs the truth calls "
        f"correct. {train_steps} steps each; value ± one standard error"
    )
    print(arms_table(arms))
    print("\npaired differences on the same eval trials (difference ± its standard error)")
    print(comparisons_table(comparisons))
    if over_seeds:
        print(
            f"\nthe same differences over training seeds 0..{arm_seeds - 1} (each arm retrained "
            "on its own shards; mean ± standard error over seeds)"
        )
        print(seed_comparisons_table(over_seeds))
    print(
        f"round 1's scorer: the round-0 encoder's own top {top_fraction:.0%} would keep "
        f"{scoring['round0_encoder']['kept']} pairs, correctly captioned "
        f"{scoring['round0_encoder']['correct_caption_share']:.3f}"
        + (
            f"; cross-fit ({scorer_folds} folds x {scorer_seeds} seeds) keeps {scoring['cross_fit']['kept']}, "
            f"{scoring['cross_fit']['correct_caption_share']:.3f}"
            if scorer_folds > 1
            else ""
        )
    )
    print("\n=== timings")
    print(steps.table())
    report = {
        "arms": arms,
        "comparisons": comparisons,
        "comparisons_over_seeds": over_seeds,
        "arm_seeds": arm_seeds,
        "filters": filters,
        "scoring": scoring,
        "train_steps": train_steps,
        "top_fraction": top_fraction,
        "scale": scale,
        "seed": seed,
        "world_counts": world.get("counts", {}),
        "timings": dict(steps.rows),
        "wall_seconds": steps.wall(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nreport: {out / 'report.json'}")
    print(f"\nbrowse it: make dashboard RUN={out}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the whole chain on the built-in mini Common Crawl")
    parser.add_argument("--out", default="demo-run", help="run folder")
    parser.add_argument("--scale", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=1000,
        help="optimizer steps per round (three phases: 80%% / 10%% / 10%%)",
    )
    parser.add_argument("--t", type=float, default=300.0, help="MetaCLIP balancing threshold")
    parser.add_argument(
        "--top-fraction",
        type=float,
        default=0.5,
        # Three cross-fit folds (2026-12-07, benchmarks/crossfit_scoring.py): top 0.6 keeps 881
        # pairs 0.942 correctly captioned, 0.5 711 at 0.959 (zero-shot 25.7%), 0.4 546 at 0.969.
        # Two folds, one run each: 0.5 kept 705 at 0.939, zero-shot 23.2%; 0.4 531 at 0.953,
        # 23.2%; 0.3 369 at 0.957, 20.3%. DataComp's best CLIP-score filter keeps 30%.
        help="share of the pool round 1 keeps by its scorer's score",
    )
    parser.add_argument(
        "--scorer-folds",
        type=int,
        default=3,
        # On the demo's round-0 pairs (2026-12-07, truth-table AUC of correct against wrong
        # captions): 2 folds 0.683 (two seeds per fold, mean score: 0.730), 3 folds 0.737.
        help="round 1's scorer: 1 = the round-0 encoder, which trained on the pairs it scores; "
        "N > 1 = cross-fitting, N scorers each trained like round 0 without one fold of its "
        "pairs, each scoring that fold",
    )
    parser.add_argument(
        "--scorer-seeds",
        type=int,
        default=1,
        help="cross-fit scorers per fold, each another training seed; a row's score is the "
        "mean of its fold's scorers (one scorer's scores are noisy: two seeds' correlate ~0.5)",
    )
    parser.add_argument(
        "--arm-seeds",
        type=int,
        default=1,
        help="train every arm on N training seeds (same shards) and report the differences "
        "over seeds too (report.json comparisons_over_seeds): what retraining moves, which the "
        "eval sets' standard errors do not count; each seed adds three trainings (~4 min)",
    )
    parser.add_argument(
        "--scorer-steps",
        type=int,
        default=None,
        help="steps of each cross-fit scorer (default: --train-steps)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="the port the mini web's hosts serve on (a new world only; a resumed one keeps its own)",
    )
    parser.set_defaults(func=_main)


def one_thread_per_process() -> None:
    """One torch (OpenMP) thread in this process and every command it starts, unless
    OMP_NUM_THREADS says otherwise: two things run at once through most of the demo, and on
    2 cores a 2-thread process beside another spins its threads (round 0's evaluation beside
    the reference arm's training took 136 s where it takes 37 s alone)."""
    threads = os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules and threads.isdigit():
        sys.modules["torch"].set_num_threads(int(threads))


def _main(args: argparse.Namespace) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    one_thread_per_process()
    run_demo(
        Path(args.out).resolve(),
        args.scale,
        args.seed,
        args.train_steps,
        args.t,
        args.top_fraction,
        args.port,
        args.scorer_folds,
        args.scorer_seeds,
        args.scorer_steps,
        args.arm_seeds,
    )
    return 0
