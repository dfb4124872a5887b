"""The debias stage's plan at pool scale: how long the linear program takes, and its memory.

The driver of `python -m curation debias` holds summed counts only: attributed captions per
(value, concept). This script builds such counts for `--concepts` constrained concepts and two
values (each concept 100-5,000 attributed captions, its female share drawn from Beta(5, 5), as
many unattributed captions as three times the attributed ones), then plans once with a drop
bound the targets fit (`--max-drop`) and once with one they do not (`--tight-drop`, so the plan
bisects its relaxation). It prints seconds per plan (CPU time of this process), the planned
association and representation against the targets, the rows planned to drop, and peak RSS.

    .venv/bin/python benchmarks/debias_plan.py [--concepts 20000] [--max-drop 0.2] [--tight-drop 0.02]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.debias.planner import (
    TOTAL_ENTRY,
    Targets,
    association,
    cells_from_counts,
    plan_keep,
    representation,
)


def synthetic_counts(concepts: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = rng.integers(100, 5000, concepts)
    female = (rows * rng.beta(5, 5, concepts)).astype(np.int64)
    male = rows - female
    # captions also name concepts below the constrained ones: the totals are 20% larger
    totals = [int(female.sum() * 1.2), int(male.sum() * 1.2)]
    return pa.table(
        {
            "lang": ["female"] * concepts + ["male"] * concepts + ["female", "male", "(none)"],
            "entry": pa.array(
                np.concatenate([np.arange(concepts)] * 2 + [np.full(3, TOTAL_ENTRY)]), pa.int32()
            ),
            "count": pa.array(np.concatenate([female, male, [*totals, 3 * sum(totals)]])),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=20_000)
    parser.add_argument("--max-drop", type=float, default=0.2)
    parser.add_argument("--tight-drop", type=float, default=0.02)
    args = parser.parse_args()
    cells = cells_from_counts(synthetic_counts(args.concepts), ["female", "male"], set(), 100)
    print(f"{len(cells.concepts)} constrained concepts, {cells.eligible:,} eligible rows")
    for max_drop in (args.max_drop, args.tight_drop):
        targets = Targets({"female": 0.5, "male": 0.5}, 0.01, 0.05, 100, max_drop)
        start = time.process_time()
        plan = plan_keep(cells, targets)
        seconds = time.process_time() - start
        kept = plan.keep * cells.n
        shares = representation(kept.sum(axis=1))
        spread = association(kept[:, :-1], shares).max()
        dropped = (cells.attributed - kept.sum()) / cells.eligible
        print(
            f"max-drop {max_drop}: {seconds:.1f} s CPU, relaxation {plan.relaxation:.3f}, "
            f"planned association {spread:.3f} (target 0.05), female share {shares[0]:.3f} "
            f"(target 0.5 +- 0.01), drops {dropped:.1%} of the rows"
        )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
