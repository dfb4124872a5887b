"""How many attributed rows to keep per (attribute value, concept): the de-biasing plan.

After Alabdulmohsin et al., "CLIP the Bias" (2024): first-order bias is how often each value of a
sensitive attribute is represented; second-order bias is how strongly a value is associated with
a concept. We measure the association of concept c as the spread max_a |P(a | c) - P(a)| over
the rows whose caption names exactly one value a (P(a): the value's share among those rows).

The plan is a linear program over the kept counts k[a, j] <= n[a, j], where j runs over the
constrained concepts (those with at least `min_concept_rows` attributed rows; entries that are
attribute terms themselves are never constrained) and one column for every other attributed row:
- every value's overall share lies within center(a) +- tolerance (first order);
- inside every constrained concept, each value's share lies within center(a) +- (max_association
  - tolerance), so its distance to the achieved P(a) is at most max_association (second order);
- at most `max_drop` of the eligible rows are dropped, less three standard deviations of the
  per-row draws (at most sqrt(max_drop * eligible) rows), so the drawn drop stays in bounds;
and it keeps as many rows as it can. The center is the target representation. When the targets
cannot be met within `max_drop`, the plan gives up first-order first, then second-order: a
relaxation r in [0, 2] (the smallest that fits, found by bisection) moves the center from the
target to the pool's own shares for r <= 1, and for r > 1 widens the concept width towards 1.
The counts are memberships (a caption naming two constrained concepts counts in both); a row
takes the smallest keep fraction of its concepts, so the plan is exact when each attributed
caption names at most one constrained concept and conservative otherwise. What was achieved is
measured on the kept rows, never taken from the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.optimize
import scipy.sparse

TOTAL_ENTRY = -1  # the count row that holds a label's total rows (any concept or none)
BISECTION_STEPS = 14


@dataclass(frozen=True)
class Targets:
    representation: Mapping[str, float]  # value -> target share among attributed rows
    tolerance: float  # first order: |share(a) - target(a)| <= tolerance
    max_association: float  # second order: max_a |P(a|c) - P(a)| <= max_association
    min_concept_rows: int  # concepts with fewer attributed rows are not constrained
    max_drop: float  # the most of the eligible rows the plan may drop

    @property
    def concept_width(self) -> float:
        return max(0.0, self.max_association - self.tolerance)


@dataclass(frozen=True)
class Cells:
    """Attributed rows per (value, concept) from the summed counts; the last column is "rest"."""

    values: list[str]
    concepts: np.ndarray  # the constrained concept ids, sorted
    n: np.ndarray  # (values, concepts + 1) int64
    members: np.ndarray  # (values, concepts) memberships, for association statistics
    totals: dict[str, int]  # rows per label (values, several, none)

    @property
    def attributed(self) -> int:
        return int(sum(self.totals.get(value, 0) for value in self.values))

    @property
    def eligible(self) -> int:
        return int(sum(self.totals.values()))


def cells_from_counts(
    counts: pa.Table, values: list[str], excluded: set[int], min_concept_rows: int
) -> Cells:
    labels = counts["lang"].to_pylist()
    entries = counts["entry"].to_numpy()
    numbers = counts["count"].to_numpy()
    totals: dict[str, int] = {}
    per_concept: dict[int, np.ndarray] = {}
    index = {value: i for i, value in enumerate(values)}
    for label, entry, number in zip(labels, entries, numbers):
        if entry == TOTAL_ENTRY:
            totals[label] = totals.get(label, 0) + int(number)
        elif label in index and int(entry) not in excluded:
            row = per_concept.setdefault(int(entry), np.zeros(len(values), dtype=np.int64))
            row[index[label]] += int(number)
    concepts = np.array(
        sorted(c for c, row in per_concept.items() if row.sum() >= min_concept_rows),
        dtype=np.int64,
    )
    members = np.zeros((len(values), len(concepts)), dtype=np.int64)
    for column, concept in enumerate(concepts):
        members[:, column] = per_concept[int(concept)]
    totals_by_value = np.array([totals.get(value, 0) for value in values], dtype=np.int64)
    rest = np.maximum(totals_by_value - members.sum(axis=1), 0)
    return Cells(values, concepts, np.column_stack([members, rest]), members, totals)


@dataclass(frozen=True)
class Plan:
    keep: np.ndarray  # (values, concepts + 1) keep fraction per cell
    relaxation: float  # 0: the targets as set; see the module docstring
    center: np.ndarray  # the representation the plan aims at
    association_bound: float  # the planned max association (before sampling error)
    planned_kept: int


def plan_keep(cells: Cells, targets: Targets) -> Plan:
    n = cells.n.astype(np.float64)
    if cells.attributed == 0:
        target = np.array([targets.representation[v] for v in cells.values])
        return Plan(np.ones_like(n), 0.0, target, targets.max_association, 0)
    kept = _solve(cells, targets, 0.0)
    relaxation = 0.0
    if kept is None:
        low, high = 0.0, 2.0
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            if _solve(cells, targets, middle) is None:
                low = middle
            else:
                high = middle
        relaxation = high
        kept = _solve(cells, targets, relaxation)
    center, width = _relaxed(cells, targets, relaxation)
    if kept is None:  # only through numerical trouble: keep everything
        kept = n
    kept = np.minimum(kept.reshape(n.shape), n)
    keep = np.divide(kept, n, out=np.ones_like(n), where=n > 0)
    return Plan(
        np.clip(keep, 0.0, 1.0), relaxation, center, width + targets.tolerance, int(kept.sum())
    )


def _relaxed(cells: Cells, targets: Targets, relaxation: float) -> tuple[np.ndarray, float]:
    """The representation center and the concept width at a relaxation in [0, 2]."""
    target = np.array([targets.representation[value] for value in cells.values])
    own = representation(np.array([cells.totals.get(v, 0) for v in cells.values], dtype=float))
    center = target + min(relaxation, 1.0) * (own - target)
    width = targets.concept_width + max(relaxation - 1.0, 0.0) * (1.0 - targets.concept_width)
    return center, width


def _solve(cells: Cells, targets: Targets, relaxation: float) -> np.ndarray | None:
    """The kept counts that meet the (relaxed) targets and keep the most rows; None if none do."""
    center, concept_width = _relaxed(cells, targets, relaxation)
    values, columns = cells.n.shape
    size = values * columns
    concept_rows = _share_constraints(
        center, concept_width, np.arange(columns - 1)[:, None], columns
    )
    global_rows = _share_constraints(
        center, targets.tolerance, np.arange(columns)[None, :], columns
    )
    used = len(concept_rows[3]) + len(global_rows[3])
    allowed = targets.max_drop * cells.eligible
    drop_row = (
        np.full(size, used),
        np.arange(size),
        -np.ones(size),
        np.array([-(cells.attributed - max(0.0, allowed - 3 * np.sqrt(allowed)))]),
    )
    shifted = (global_rows[0] + len(concept_rows[3]), *global_rows[1:])
    row, col, data, bound = (
        np.concatenate(parts) for parts in zip(concept_rows, shifted, drop_row)
    )
    result = scipy.optimize.linprog(
        -np.ones(size),
        A_ub=scipy.sparse.csr_matrix((data, (row, col)), shape=(used + 1, size)),
        b_ub=bound,
        bounds=np.column_stack([np.zeros(size), cells.n.ravel().astype(np.float64)]),
        method="highs",
    )
    return result.x if result.status == 0 else None


def _share_constraints(
    center: np.ndarray, width: float, groups: np.ndarray, columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (row, variable, coefficient, bound) keeping each value's share of each group of
    columns (`groups`: one row of column indices per group) within center +- width:
    k[a, J] - (c_a + w) sum_b k[b, J] <= 0 and (c_a - w) sum_b k[b, J] - k[a, J] <= 0."""
    count, length = groups.shape
    values = len(center)
    signs = np.array([1.0, -1.0])
    shares = center[:, None] + signs[None, :] * width  # (a, sign)
    coefficient = signs[None, :, None] * (np.eye(values)[:, None, :] - shares[:, :, None])
    variable = np.arange(values)[None, :, None] * columns + groups[:, None, :]  # (group, b, l)
    shape = (count, values, 2, values, length)
    row = np.arange(count * values * 2).reshape(count, values, 2)
    return (
        np.broadcast_to(row[:, :, :, None, None], shape).ravel(),
        np.broadcast_to(variable[:, None, None, :, :], shape).ravel(),
        np.broadcast_to(coefficient[None, :, :, :, None], shape).ravel(),
        np.zeros(count * values * 2),
    )


def representation(totals_by_value: np.ndarray) -> np.ndarray:
    total = totals_by_value.sum()
    return totals_by_value / total if total else np.zeros(len(totals_by_value))


def association(members: np.ndarray, overall: np.ndarray) -> np.ndarray:
    """Per concept, max_a |P(a | c) - P(a)| (0 for a concept with no rows)."""
    per_concept = members.sum(axis=0)
    shares = np.divide(
        members, per_concept, out=np.zeros(members.shape, dtype=np.float64), where=per_concept > 0
    )
    spread = np.abs(shares - overall[:, None]).max(axis=0, initial=0.0)
    return np.where(per_concept > 0, spread, 0.0)
