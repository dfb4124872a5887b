"""`python -m training eval --ckpt RUN --tasks zeroshot,retrieval,grounding,dense,knn,aspect --data DIR`.

DIR is a CLIP_benchmark-style root with one folder per evaluation set; each task reads its
default set (below) unless `--set TASK=PATH` points it elsewhere (a real ImageNet, COCO or
RefCOCO in the same WebDataset layout). The default root is the mini Common Crawl's eval
folder that `make demo` builds. Results go to RUN/eval/step_NNNNNNNN.json and a printed table.

During training, call `evaluate_checkpoint(folder, data, tasks)` on one rank right after a
checkpoint is saved (it reads the weights from disk, so it works under any parallelism) and log
`flatten_metrics(report["results"])`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.checkpoint import CONFIG_FILE, TRAINER_FILE, write_json_atomic
from training.config import ScheduleArgs, from_dict
from training.data.samples import BadSample
from training.models.siglip import SigLIP2
from training.run_folder import (
    load_encoder,
    resolve_checkpoint,
    run_of_checkpoint,
    tokenizer_for_checkpoint,
)
from training.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_DATA = "demo-run/world/eval"
# Task → evaluation set folder under the data root (the mini Common Crawl's names).
DEFAULT_SETS: dict[str, str] = {
    "zeroshot": "zeroshot",
    "retrieval": "retrieval",
    "grounding": "refexp",
    "dense": "segmentation",
    "knn": "zeroshot",
    "aspect": "extreme_aspect",  # zero-shot at extreme aspect ratios: square resize vs NaFlex
}
TASKS = tuple(DEFAULT_SETS)
# The headline number of each task, for the table.
_HEADLINE = {
    "zeroshot": "top1",
    "retrieval": "text_to_image_R@1",
    "grounding": "acc@0.5",
    "dense": "mIoU",
    "knn": "top1@k10",
    "aspect": "naflex_top1",
}


def _run_task(
    task: str, model: SigLIP2, tokenizer: Tokenizer, dataset: str, naflex: bool
) -> dict[str, Any]:
    from training.eval.aspect import aspect_zeroshot
    from training.eval.dense import segmentation_probe
    from training.eval.grounding import aref_accuracy
    from training.eval.knn import knn_accuracy
    from training.eval.retrieval import retrieval_recall
    from training.eval.zeroshot import zeroshot_accuracy

    if task == "zeroshot":
        return zeroshot_accuracy(model, tokenizer, dataset, naflex=naflex)
    if task == "retrieval":
        return retrieval_recall(model, tokenizer, dataset)
    if task == "grounding":
        return aref_accuracy(model, tokenizer, dataset)
    if task == "dense":
        return segmentation_probe(model, dataset)
    if task == "aspect":
        return aspect_zeroshot(model, tokenizer, dataset)
    return knn_accuracy(model, dataset)


def evaluate(
    model: SigLIP2,
    data: str,
    tasks: Sequence[str],
    sets: dict[str, str] | None = None,
    tokenizer: Tokenizer | None = None,
    naflex: bool = False,
) -> dict[str, dict[str, Any]]:
    """{task: metrics (+ "dataset", "seconds")}. A task whose set is missing or unreadable
    reports {"error": ...} instead of stopping the others. `naflex`: the model was trained on
    NaFlex batches, so zero-shot scores it on its native input (see zeroshot_accuracy)."""
    unknown = [task for task in tasks if task not in DEFAULT_SETS]
    if unknown:
        raise ValueError(f"unknown eval tasks {unknown}; choose from {list(TASKS)}")
    tokenizer = tokenizer or Tokenizer(context_length=model.cfg.text.context_length)
    sets = sets or {}
    results: dict[str, dict[str, Any]] = {}
    was_training = model.training
    model.eval()
    for task in tasks:
        dataset = sets.get(task) or f"{data.rstrip('/')}/{DEFAULT_SETS[task]}"
        started = time.perf_counter()
        try:
            metrics = _run_task(task, model, tokenizer, dataset, naflex)
        except (FileNotFoundError, BadSample, ValueError) as error:
            log.warning("eval %s on %s failed: %s", task, dataset, error)
            metrics = {"error": f"{type(error).__name__}: {error}"}
        results[task] = {
            **metrics,
            "dataset": dataset,
            "seconds": round(time.perf_counter() - started, 3),
        }
    model.train(was_training)
    return results


def trained_on_naflex(config: dict[str, Any], step: int) -> bool:
    """Whether a checkpoint (its config.json, and the steps it had trained) has trained phase-3
    (NaFlex) steps; checkpoints without the run's schedule (imports, hand-written) have not."""
    schedule = config.get("train", {}).get("schedule")
    if not schedule:
        return False
    return step > from_dict(ScheduleArgs, schedule, "train.schedule.").first_step_of(3)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str = DEFAULT_DATA,
    tasks: Sequence[str] = TASKS,
    sets: dict[str, str] | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint (run, checkpoints/ or step folder) and write
    OUT_DIR/step_NNNNNNNN.json (default RUN/eval/); returns the report written."""
    folder = resolve_checkpoint(checkpoint)
    trainer_state = folder / TRAINER_FILE
    step = json.loads(trainer_state.read_text()).get("step", 0) if trainer_state.is_file() else 0
    model = load_encoder(folder)
    tokenizer = tokenizer_for_checkpoint(folder, model.cfg.text.context_length)
    naflex = trained_on_naflex(json.loads((folder / CONFIG_FILE).read_text()), step)
    report = {
        "checkpoint": str(folder),
        "step": step,
        "data": data,
        "results": evaluate(model, data, tasks, sets, tokenizer, naflex),
    }
    out_dir = out_dir or run_of_checkpoint(folder) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    report["path"] = str(out_dir / f"step_{step:08d}.json")
    write_json_atomic(Path(report["path"]), report)
    return report


def flatten_metrics(results: dict[str, dict[str, Any]], prefix: str = "eval") -> dict[str, float]:
    """{"eval/TASK/METRIC": number} of every numeric metric, for a metrics log."""
    flat = {}
    for task, metrics in results.items():
        for name, value in metrics.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and name != "seconds"
            ):
                flat[f"{prefix}/{task}/{name}"] = float(value)
    return flat


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per task: headline metric, its floor (chance / baseline), and the rest."""
    rows = [("task", "metric", "value", "floor", "other")]
    for task, metrics in results.items():
        if "error" in metrics:
            rows.append((task, "error", "-", "-", metrics["error"][:60]))
            continue
        numbers = [k for k, v in metrics.items() if isinstance(v, float) and k != "seconds"]
        headline = _HEADLINE[task] if _HEADLINE[task] in metrics else numbers[0]
        floor = next(
            (
                metrics[k]
                for k in ("chance", "baseline_majority_mIoU", "baseline_centre_box")
                if k in metrics
            ),
            None,
        )
        others = ", ".join(f"{k}={metrics[k]:.3f}" for k in numbers if k != headline)
        rows.append(
            (
                task,
                headline,
                f"{metrics[headline]:.3f}",
                "-" if floor is None else f"{floor:.3f}",
                others,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4]
        for row in rows
    )


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("eval", help="zero-shot, retrieval, grounding, dense probe, k-NN")
    parser.add_argument(
        "--ckpt", required=True, help="run folder, checkpoints/ folder or step folder"
    )
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)}"
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help="CLIP_benchmark-style root of eval sets"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TASK=PATH",
        help="evaluation set of one task (repeatable)",
    )
    parser.add_argument("--out", default=None, help="folder for the JSON (default RUN/eval)")
    parser.set_defaults(handler=run_eval)


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    sets = {}
    for pair in pairs:
        task, sep, path = pair.partition("=")
        if not sep or task not in DEFAULT_SETS or not path:
            raise ValueError(f"--set {pair!r}: expected TASK=PATH with TASK in {list(TASKS)}")
        sets[task] = path
    return sets


def run_eval(options: argparse.Namespace) -> int:
    try:
        tasks = [task.strip() for task in options.tasks.split(",") if task.strip()]
        unknown = [task for task in tasks if task not in DEFAULT_SETS]
        if unknown:
            raise ValueError(f"unknown eval tasks {unknown}; choose from {list(TASKS)}")
        report = evaluate_checkpoint(
            options.ckpt,
            options.data,
            tasks,
            _parse_sets(options.set),
            Path(options.out) if options.out else None,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"eval: {error}", file=sys.stderr)
        return 2
    print(f"{report['checkpoint']} (step {report['step']}) on {report['data']}")
    print(format_table(report["results"]))
    print(f"wrote {report['path']}")
    return 0 if all("error" not in m for m in report["results"].values()) else 1
