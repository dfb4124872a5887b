"""Do phases 2 and 3 help? `tiny` on the mini Common Crawl, four schedules at equal steps.

Claim (issue 8): at equal steps, on the same data and seed, adding phase 2's self-distillation
(SILC + TIPS against an EMA teacher) to the last 20% of a phase-1 run, then Gram anchoring and
KoLeo, changes zero-shot, retrieval, ARef and a dense linear-probe segmentation mIoU on the
world's held-out sets; and phase 3 (NaFlex for the last 10%) makes the model better on the
extreme-aspect set when it is given images at their own aspect ratio. The arms:

    phase1      phase 1 only (sigmoid + LocCa)         phase2_start=1.0 phase3_start=1.0
    silc_tips   + SILC and TIPS from 80% of the steps  phase2_start=0.8, Gram and KoLeo weights 0
    gram_koleo  + Gram anchoring and KoLeo             phase2_start=0.8 phase3_start=1.0
    naflex      + NaFlex batches from 90% (the preset) phase2_start=0.8 phase3_start=0.9

Each arm is evaluated with training.eval.run (zeroshot, retrieval, grounding, dense, aspect);
`aspect` classifies the extreme-aspect set twice, squashed to the square input and as NaFlex at
the same patch count. Image-text shards and the world come from minicc_quality's helpers (the
world's grounding images with its good captions unless --text-shards is given); the output says
which, and how varied their aspect ratios are (NaFlex batches keep each image's own).

An arm whose folder already holds its summary (ARM/ablation.json) is not trained again; a
killed arm resumes from its last checkpoint.

    .venv/bin/python benchmarks/phase_ablation.py --world /tmp/minicc [--steps 1000] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

from minicc_quality import captions_from_grounding, ensure_world, world_captions
from PIL import Image

from training.checkpoint import write_json_atomic
from training.config import load_args
from training.data.samples import IMAGE_EXTENSIONS
from training.data.shards import expand_shard_urls
from training.data.tars import iter_tar_samples
from training.eval.run import evaluate_checkpoint
from training.metrics_log import read_metrics
from training.trainer import train

ARMS: dict[str, list[str]] = {
    "phase1": ["schedule.phase2_start=1.0", "schedule.phase3_start=1.0"],
    "silc_tips": [
        "schedule.phase2_start=0.8",
        "schedule.phase3_start=1.0",
        "loss.gram_weight=0",
        "loss.koleo_weight=0",
    ],
    "gram_koleo": ["schedule.phase2_start=0.8", "schedule.phase3_start=1.0"],
    "naflex": ["schedule.phase2_start=0.8", "schedule.phase3_start=0.9"],
}
TASKS = ("zeroshot", "retrieval", "grounding", "dense", "aspect")
SUMMARY = "ablation.json"


def aspect_summary(text_shards: str, limit: int = 2000) -> dict[str, float]:
    """How far the first `limit` training images are from square (long side / short side)."""
    ratios = []
    for url in expand_shard_urls(text_shards):
        for sample in iter_tar_samples(url):
            data = next((sample.files[e] for e in IMAGE_EXTENSIONS if e in sample.files), None)
            if data is None:
                continue
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
            ratios.append(max(width, height) / min(width, height))
            if len(ratios) >= limit:
                break
        if len(ratios) >= limit:
            break
    if not ratios:
        return {"images": 0}
    return {
        "images": len(ratios),
        "non_square": sum(r > 1.1 for r in ratios) / len(ratios),
        "at_least_2to1": sum(r >= 2.0 for r in ratios) / len(ratios),
        "max_ratio": max(ratios),
    }


def run_arm(
    name: str,
    arm_overrides: list[str],
    text_shards: str,
    grounding: str,
    evals: Path,
    out: Path,
    steps: int,
    overrides: list[str],
) -> dict:
    summary_path = out / SUMMARY
    if summary_path.exists():
        print(f"== {name}: done before, read from {summary_path}", flush=True)
        return json.loads(summary_path.read_text())
    print(f"\n== training tiny, arm {name}: {' '.join(arm_overrides)} ==", flush=True)
    args = load_args(
        "tiny",
        [
            f"schedule.steps={steps}",
            f"checkpoint.every={max(1, steps // 4)}",
            "logging.tensorboard=false",
            "logging.progress_bar=false",
            *arm_overrides,
            *overrides,
        ],
    )
    args.data.text_shards, args.data.grounding_shards, args.out = text_shards, grounding, str(out)
    started = time.perf_counter()
    folder = train(args)
    train_seconds = time.perf_counter() - started  # of this invocation (a resumed run: its rest)
    started = time.perf_counter()
    report = evaluate_checkpoint(folder, str(evals), TASKS)
    metrics = read_metrics(out / "metrics.jsonl")
    summary = {
        "arm": name,
        "overrides": arm_overrides + overrides,
        "steps": steps,
        "schedule": {
            "phase2_start": args.schedule.phase2_start,
            "phase3_start": args.schedule.phase3_start,
        },
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - started,
        "final_metrics": metrics[-1],
        "eval": report,
    }
    write_json_atomic(summary_path, summary)
    return summary


def headline(summary: dict) -> dict[str, float | None]:
    results = summary["eval"]["results"]

    def value(task: str, key: str) -> float | None:
        return results.get(task, {}).get(key)

    return {
        "zeroshot_top1": value("zeroshot", "top1"),
        "t2i_R@1": value("retrieval", "text_to_image_R@1"),
        "i2t_R@1": value("retrieval", "image_to_text_R@1"),
        "aref_acc@0.5": value("grounding", "acc@0.5"),
        "seg_mIoU": value("dense", "mIoU"),
        "aspect_square": value("aspect", "square_top1"),
        "aspect_naflex": value("aspect", "naflex_top1"),
    }


def floors(summary: dict) -> dict[str, float | None]:
    results = summary["eval"]["results"]
    grounding = results.get("grounding", {})
    trivial = [grounding.get(k) for k in ("baseline_whole_image", "baseline_centre_box")]
    return {
        "zeroshot_top1": results.get("zeroshot", {}).get("chance"),
        "aref_acc@0.5": max((t for t in trivial if t is not None), default=None),
        "seg_mIoU": results.get("dense", {}).get("baseline_majority_mIoU"),
        "aspect_square": results.get("aspect", {}).get("chance"),
        "aspect_naflex": results.get("aspect", {}).get("chance"),
    }


def resolution(summary: dict) -> str:
    """What one eval sample is worth, so differences between arms can be read against it."""
    results = summary["eval"]["results"]
    sizes = {
        "zero-shot": results.get("zeroshot", {}).get("samples"),
        "ARef": results.get("grounding", {}).get("queries"),
        "extreme-aspect": results.get("aspect", {}).get("samples"),
    }
    return "one eval sample is " + ", ".join(
        f"{1 / n:.2%} on {name} ({n})" for name, n in sizes.items() if n
    )


def shared_prefix(out: Path, arms: list[str]) -> str:
    """Whether the arms logged the same losses up to the first step where any arm leaves
    phase 1: same data, seed and phase-1 steps, so only the tail differs."""
    logs = {arm: read_metrics(out / arm / "metrics.jsonl") for arm in arms}
    first_other = min(
        (row["step"] for rows in logs.values() for row in rows if row.get("phase", 1) != 1),
        default=None,
    )
    prefix = {
        arm: [row["loss"] for row in rows if first_other is None or row["step"] < first_other]
        for arm, rows in logs.items()
    }
    same = len({tuple(losses) for losses in prefix.values()}) == 1
    until = f"step {first_other}" if first_other is not None else "the end"
    return (
        f"logged losses before {until}: {'identical' if same else 'DIFFERENT'} across arms "
        f"({len(next(iter(prefix.values())))} records each)"
    )


def format_table(summaries: list[dict]) -> str:
    columns = list(headline(summaries[0]))
    widths = [max(len(c), 6) for c in columns]
    lines = ["arm        " + "  ".join(c.rjust(w) for c, w in zip(columns, widths)) + "  train_min"]
    for summary in summaries:
        cells = [f"{v:.1%}" if v is not None else "-" for v in headline(summary).values()]
        lines.append(
            f"{summary['arm']:10} "
            + "  ".join(c.rjust(w) for c, w in zip(cells, widths))
            + f"  {summary['train_seconds'] / 60:9.1f}"
        )
    floor = floors(summaries[0])
    cells = [f"{floor[c]:.1%}" if floor.get(c) is not None else "" for c in columns]
    lines.append("floor      " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--world",
        type=Path,
        default=Path("/tmp/minicc-quality"),
        help="mini Common Crawl folder (built with --scale small if missing)",
    )
    parser.add_argument("--text-shards", help="image-text shards (default: derived from grounding)")
    parser.add_argument("--out", type=Path, default=Path("runs/phase_ablation"))
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of every arm")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument("overrides", nargs="*", help="config overrides for every arm (key=value)")
    options = parser.parse_args()
    arms = [arm.strip() for arm in options.arms.split(",") if arm.strip()]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {list(ARMS)}")

    ensure_world(options.world)
    grounding = str(options.world / "grounding" / "*.tar")
    if options.text_shards:
        text_shards = options.text_shards
        source = f"given image-text shards ({text_shards})"
    else:
        captions = world_captions(options.world)
        folder = options.out / ("captions_good" if captions else "captions_phrases")
        text_shards = captions_from_grounding(grounding, folder, captions)
        source = (
            "NOT curated web data: the world's grounding images (their JPEGs as stored, "
            "own aspect ratios) captioned with "
            + ("the world's good captions" if captions else "their own phrases")
            + f" ({text_shards})"
        )
    shape = aspect_summary(text_shards)
    data_line = (
        f"image-text shards: {source}; of the first {shape['images']} images "
        f"{shape.get('non_square', 0):.0%} non-square, "
        f"{shape.get('at_least_2to1', 0):.0%} at least 2:1, "
        f"widest {shape.get('max_ratio', 0):.1f}:1; grounding: {grounding}; "
        f"eval sets: {options.world / 'eval'}"
    )
    print(data_line, flush=True)

    summaries = [
        run_arm(
            arm,
            ARMS[arm],
            text_shards,
            grounding,
            options.world / "eval",
            options.out / arm,
            options.steps,
            options.overrides,
        )
        for arm in arms
    ]
    args = load_args("tiny", options.overrides)
    title = (
        f"tiny, {options.steps} steps per arm, batch {args.data.batch_size} "
        f"({args.data.grounding_fraction:.0%} grounding), seed {args.seed}; "
        f"held-out sets of {options.world}"
    )
    table = format_table(summaries)
    print(f"\n{title}\n{table}")
    by_arm = {s["arm"]: headline(s) for s in summaries}
    if "gram_koleo" in by_arm and "naflex" in by_arm:
        before, after = by_arm["gram_koleo"], by_arm["naflex"]
        print(
            f"extreme-aspect zero-shot, square → NaFlex input: gram_koleo "
            f"{before['aspect_square']:.1%} → {before['aspect_naflex']:.1%}; naflex "
            f"{after['aspect_square']:.1%} → {after['aspect_naflex']:.1%}"
        )
    checks = [resolution(summaries[0]), shared_prefix(options.out, arms)]
    print("\n".join([*checks, data_line]))
    result = {
        "title": title,
        "data": data_line,
        "checks": checks,
        "text_shards_aspect": shape,
        "arms": {
            s["arm"]: {
                "overrides": s["overrides"],
                "train_seconds": s["train_seconds"],
                "headline": by_arm[s["arm"]],
                "eval": s["eval"]["results"],
            }
            for s in summaries
        },
        "floors": floors(summaries[0]),
        "table": table,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(options.out / "phase_ablation.json", result)
    print(f"wrote {options.out / 'phase_ablation.json'}")


if __name__ == "__main__":
    main()
