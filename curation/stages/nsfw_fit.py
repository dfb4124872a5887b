"""`python -m curation nsfw-fit`: fit the NSFW head on labelled rows of a scored pool.

    python -m curation nsfw-fit --pool POOL --labels LABELS.parquet --out HEAD.safetensors

LABELS is Parquet (or CSV) with `uid` and `unsafe` (bool or 0/1): a user labels some pool rows
(or the mini web's planted truth does), the score stage has embedded them, and this fits the MLP
head on those embeddings (curation/nsfw/head.py), holding out a stratified share to measure
recall on unsafe rows and the false-removal rate on safe ones. The head records the scorer it was
fitted on; `nsfw --weights HEAD.safetensors` refuses a pool scored by another model.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from curation import fsio
from curation.nsfw.settings import FitSettings
from curation.runner import StageReport
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stages.score import read_scorer_record

STAGE = "nsfw_fit"


@dataclass(frozen=True)
class NsfwFitConfig:
    pool: str
    labels: str  # Parquet/CSV: uid, unsafe
    out: str  # the head file to write (.safetensors)
    scores: str = ""  # score stage folder (default: POOL/curation/score)
    settings: FitSettings = FitSettings()

    def __post_init__(self) -> None:
        if not self.pool or not self.labels or not self.out:
            raise ConfigError("nsfw-fit: --pool, --labels and --out are required")
        s = self.settings
        if s.epochs < 1 or s.learning_rate <= 0 or any(w < 1 for w in s.hidden):
            raise ConfigError("nsfw-fit: --epochs, --learning-rate and --hidden must be positive")
        if not 0 <= s.holdout < 1 or not 0 < s.threshold < 1:
            raise ConfigError("nsfw-fit: --holdout must be in [0, 1), --threshold in (0, 1)")
        if s.max_false_removal is not None and (not 0 <= s.max_false_removal < 1 or not s.holdout):
            raise ConfigError(
                "nsfw-fit: --max-false-removal must be in [0, 1) and needs a --holdout to "
                "calibrate the threshold on"
            )
        object.__setattr__(self, "scores", self.scores or fsio.join(self.pool, "curation", "score"))


def run(config: NsfwFitConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    from curation.nsfw.head import fit_head, save_head  # torch: only when fitting
    from curation.nsfw.shards import labelled_embeddings, read_labels

    scorer = read_scorer_record(config.scores, "nsfw-fit")
    try:
        labels = read_labels(config.labels)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"nsfw-fit: {exc}") from exc
    embeddings, unsafe, missing = labelled_embeddings(config.scores, labels)
    if not unsafe.any() or unsafe.all():
        raise ConfigError(
            f"nsfw-fit: {len(unsafe)} labelled rows were embedded ({int(unsafe.sum())} unsafe); "
            "fitting needs both unsafe and safe ones"
        )
    head = fit_head(
        embeddings,
        unsafe,
        config.settings,
        seed=options.seed,
        scorer={"model_name": scorer.get("model_name"), "tag": scorer.get("tag")},
    )
    save_head(head, config.out)
    fit = head.spec.fit
    report = StageReport(STAGE, config.out)
    report.summary = {
        "labelled_rows": len(unsafe),
        "unsafe_rows": int(unsafe.sum()),
        "labels_not_embedded": missing,
        **{k: v for k, v in fit.items() if k != "settings"},
    }
    report.notes.append(
        f"nsfw-fit: {len(unsafe):,} labelled rows ({int(unsafe.sum()):,} unsafe; {missing:,} "
        f"labels not embedded) -> {config.out}"
    )
    if "holdout_rows" in fit:
        # A class with no held-out row (few labels) has no rate: None, shown as "-".
        recall, false = (
            "-" if fit[key] is None else f"{fit[key]:.3f}"
            for key in ("holdout_unsafe_recall", "holdout_false_removal_rate")
        )
        report.notes.append(
            f"held out {fit['holdout_rows']:,}: accuracy {fit['holdout_accuracy']:.3f}, unsafe "
            f"recall {recall}, false removals {false} at P >= {head.spec.threshold:g}"
        )
    if config.settings.max_false_removal is not None:
        report.summary["threshold"] = head.spec.threshold
        report.notes.append(
            f"threshold calibrated to {head.spec.threshold:.6g}: the lowest that removes at most "
            f"{config.settings.max_false_removal:.1%} of the held-out safe rows (so the held-out "
            "false-removal rate is not an independent measure)"
        )
    if scorer.get("random_init"):
        report.notes.append("WARNING: fitted on embeddings of a randomly initialised scorer")
    return [report]


def config_from_args(args: argparse.Namespace) -> NsfwFitConfig:
    try:
        hidden = tuple(int(w) for w in args.hidden.split(",") if w.strip())
    except ValueError as exc:
        raise ConfigError(f"nsfw-fit: --hidden {args.hidden!r}: comma-separated widths") from exc
    settings = FitSettings(
        hidden=hidden,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        holdout=args.holdout,
        threshold=args.threshold,
        max_false_removal=args.max_false_removal,
    )
    return NsfwFitConfig(args.pool, args.labels, args.out, args.scores or "", settings)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nsfw-fit", help="fit the NSFW head on labelled rows of a scored pool"
    )
    defaults = FitSettings()
    parser.add_argument("--pool", required=True, help="pool folder (scored by `score`)")
    parser.add_argument("--labels", required=True, help="Parquet/CSV with uid, unsafe")
    parser.add_argument("--out", required=True, help="head file to write (.safetensors)")
    parser.add_argument("--scores", default=None, help="default: POOL/curation/score")
    parser.add_argument(
        "--hidden",
        default=",".join(map(str, defaults.hidden)),
        help="hidden layer widths, comma-separated",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--holdout", type=float, default=defaults.holdout, help="share held out to measure"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=defaults.threshold,
        help="P(unsafe) at or above which `nsfw` drops a row (stored in the head)",
    )
    parser.add_argument(
        "--max-false-removal",
        type=float,
        default=None,
        help="calibrate: store the lowest threshold that removes at most this share of the "
        "held-out safe rows (instead of --threshold)",
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
