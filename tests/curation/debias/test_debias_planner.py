import json

import numpy as np
import pyarrow as pa
import pytest

from curation.debias.planner import (
    TOTAL_ENTRY,
    Targets,
    association,
    cells_from_counts,
    plan_keep,
    representation,
)
from curation.debias.terms import AttributeDetector, load_terms
from curation.stages.common import ConfigError

VALUES = ["female", "male"]


def counts(cells: dict[tuple[str, int], int]) -> pa.Table:
    return pa.table(
        {
            "lang": [label for label, _ in cells],
            "entry": pa.array([entry for _, entry in cells], pa.int32()),
            "count": pa.array(list(cells.values()), pa.int64()),
        }
    )


# concept 0 ("nurse") 90% female, concept 1 ("engineer") 20%, concept 2 balanced, 3 tiny
PLANTED = counts(
    {
        ("female", 0): 900,
        ("male", 0): 100,
        ("female", 1): 200,
        ("male", 1): 800,
        ("female", 2): 500,
        ("male", 2): 500,
        ("female", 3): 5,
        ("female", TOTAL_ENTRY): 3000,
        ("male", TOTAL_ENTRY): 2500,
        ("(none)", TOTAL_ENTRY): 4000,
        ("(several)", TOTAL_ENTRY): 100,
    }
)


def planned(cells, plan) -> tuple[np.ndarray, np.ndarray, float]:
    kept = plan.keep * cells.n
    shares = representation(kept.sum(axis=1))
    return shares, association(kept[:, :-1], shares), cells.attributed - kept.sum()


def test_cells_keep_concepts_with_enough_rows_and_leave_out_term_entries():
    cells = cells_from_counts(PLANTED, VALUES, excluded={2}, min_concept_rows=50)
    assert cells.concepts.tolist() == [0, 1]
    assert cells.n.tolist() == [[900, 200, 1900], [100, 800, 1600]]
    assert cells.eligible == 9600 and cells.attributed == 5500


def test_feasible_plan_meets_both_orders_within_the_drop_bound():
    cells = cells_from_counts(PLANTED, VALUES, set(), 50)
    targets = Targets({"female": 0.5, "male": 0.5}, 0.01, 0.05, 50, 0.2)
    plan = plan_keep(cells, targets)
    shares, spread, dropped = planned(cells, plan)
    assert plan.relaxation == 0
    assert np.abs(shares - 0.5).max() <= 0.01 + 1e-9
    assert spread.max() <= 0.05 + 1e-9
    assert dropped <= 0.2 * cells.eligible
    assert plan.keep[0, 0] < 0.2 and plan.keep[1, 0] == 1  # female nurses are what is cut


def test_plan_keeps_as_many_rows_as_the_targets_allow():
    cells = cells_from_counts(PLANTED, VALUES, set(), 50)
    loose = plan_keep(cells, Targets({"female": 0.5, "male": 0.5}, 0.05, 0.2, 50, 0.5))
    tight = plan_keep(cells, Targets({"female": 0.5, "male": 0.5}, 0.01, 0.05, 50, 0.5))
    assert planned(cells, loose)[2] < planned(cells, tight)[2]


def test_a_drop_bound_too_tight_relaxes_first_order_then_the_association():
    cells = cells_from_counts(PLANTED, VALUES, set(), 50)
    plan = plan_keep(cells, Targets({"female": 0.5, "male": 0.5}, 0.01, 0.05, 50, 0.03))
    shares, spread, dropped = planned(cells, plan)
    allowed = 0.03 * cells.eligible
    assert dropped <= allowed - 3 * np.sqrt(allowed) + 1e-6
    assert plan.relaxation > 1
    assert plan.center.tolist() == pytest.approx([3000 / 5500, 2500 / 5500])
    assert spread.max() <= plan.association_bound + 1e-9
    before = association(cells.members, representation(np.array([3000, 2500])))
    assert spread.max() < before.max()


def test_no_attributed_rows_keeps_everything():
    cells = cells_from_counts(counts({("(none)", TOTAL_ENTRY): 10}), VALUES, set(), 1)
    plan = plan_keep(cells, Targets({"female": 0.5, "male": 0.5}, 0.01, 0.05, 1, 0.1))
    assert plan.keep.tolist() == [[1.0], [1.0]]


def test_term_files_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"values": {"a": ["x", "y"], "b": ["y"]}}))
    with pytest.raises(ConfigError, match="under a and b"):
        load_terms(str(bad))
    with pytest.raises(ConfigError, match="no such file"):
        load_terms(str(tmp_path / "missing.json"))
    phrases = tmp_path / "phrases.json"
    phrases.write_text(json.dumps({"values": {"old": ["Senior Citizen"], "young": ["kid"]}}))
    detector = AttributeDetector(load_terms(str(phrases)))
    assert detector.labels(["a senior citizen, smiling", "seniors", "the kid"]) == [
        "old",
        "(none)",
        "young",
    ]
