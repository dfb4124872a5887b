import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from text_pool import kill_mid_pass_then_resume, write_text_pool

from curation import fsio
from curation.cli import main
from curation.debias.terms import AttributeDetector, load_terms
from curation.stages.common import ConfigError, RunOptions
from curation.stages.debias import DebiasConfig, run
from curation.stages.shards import ShardsConfig
from curation.stages.shards import run as run_shards

LOCAL = RunOptions(seed=7, use_ray=False, progress=False)
CONCEPTS = ["nurse", "engineer", "teacher", "garden", "woman", "man"]
# concept -> (captions naming the concept with a value term, share of them that are female)
PLANTED = {"nurse": (1000, 0.9), "engineer": (1000, 0.25), "teacher": (800, 0.5)}


def planted_pool(root: Path) -> tuple[Path, Path, dict[str, tuple[str | None, str | None]]]:
    """Nurse captions 90% female terms, engineers 25%, teachers 50%, plus captions that name no
    gender (kept as they are) and some that name both. Returns pool, metadata, uid -> truth."""
    rng = np.random.default_rng(0)
    texts: list[str] = []
    truth: list[tuple[str | None, str | None]] = []
    for concept, (rows, female) in PLANTED.items():
        for is_female in rng.random(rows) < female:
            person = "woman" if is_female else "man"
            texts.append(f"a {person} working as a {concept} today")
            truth.append(("female" if is_female else "male", concept))
    for i in range(2000):
        texts.append(f"a quiet garden in spring number {i}")
        truth.append((None, "garden"))
    for _ in range(100):
        texts.append("a man and a woman working as a teacher")
        truth.append((None, "teacher"))
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    truth = [truth[i] for i in order]
    pool = root / "pool"
    pool.mkdir()
    uids = write_text_pool(pool, texts, 1000)
    metadata = root / "concepts.txt"
    metadata.write_text("\n".join(CONCEPTS) + "\n")
    return pool, metadata, dict(zip(uids, truth))


def debias_columns(pool: Path) -> pa.Table:
    return pa.concat_tables(
        [pq.read_table(p) for p in sorted((pool / "curation" / "debias").glob("0*.parquet"))]
    )


def measured(kept: list[tuple[str | None, str | None]]) -> tuple[dict[str, float], float]:
    """P(female) among kept attributed rows, and max over concepts of |P(f | c) - P(f)|."""
    attributed = [(value, concept) for value, concept in kept if value]
    overall = sum(v == "female" for v, _ in attributed) / len(attributed)
    spreads = {}
    for concept in PLANTED:
        rows = [v for v, c in attributed if c == concept]
        spreads[concept] = abs(sum(v == "female" for v in rows) / len(rows) - overall)
    return spreads, overall


@pytest.fixture(scope="module")
def debiased(tmp_path_factory):
    root = tmp_path_factory.mktemp("debias")
    pool, metadata, truth = planted_pool(root)
    config = DebiasConfig(
        str(pool),
        str(metadata),
        max_association=0.05,
        tolerance=0.01,
        max_drop=0.3,
        min_concept_rows=50,
    )
    reports = run(config, LOCAL)
    assert all(r.ok for r in reports)
    return root, pool, metadata, truth, config, reports[-1].summary


def test_detector_labels_value_several_and_none():
    detector = AttributeDetector(load_terms())
    assert detector.labels(["A Woman nurse", "his sister", "a red car", None, "the man."]) == [
        "female",
        "(several)",
        "(none)",
        "(none)",
        "male",
    ]


def test_planted_association_is_brought_to_the_target_within_the_drop_bound(debiased):
    _root, pool, _metadata, truth, config, summary = debiased
    assert summary["association_before"] == pytest.approx(0.9 - 0.5556, abs=0.03)
    columns = debias_columns(pool)
    kept = [
        truth[u] for u, k in zip(columns["uid"].to_pylist(), columns["keep_debias"]) if k.as_py()
    ]
    spreads, female = measured(kept)
    tolerance = 0.02  # sampling error of the per-row draws on ~100-1000 kept rows per concept
    assert max(spreads.values()) <= config.max_association + tolerance
    assert summary["association_after"] == pytest.approx(max(spreads.values()), abs=1e-9)
    assert abs(female - 0.5) <= config.tolerance + tolerance
    assert summary["representation_after"]["female"] == pytest.approx(female, abs=1e-9)
    assert summary["relaxation"] == 0
    assert summary["kept_share"] >= 1 - config.max_drop
    assert summary["kept_rows"] == len(kept)
    untouched = [t for t in truth.values() if t[0] is None]  # no value named: always kept
    assert sum(1 for t in kept if t[0] is None) == len(untouched)
    assert {"nurse", "engineer", "teacher"} == {c["text"] for c in summary["top_concepts"]}
    assert summary["constrained_concepts"] == 3  # "woman", "man" are terms, "garden" has none
    concepts = pq.read_table(pool / "curation" / "debias" / "debias_concepts.parquet")
    assert set(concepts["entry_text"].to_pylist()) == {"nurse", "engineer", "teacher"}


def test_a_tight_drop_bound_is_kept_and_the_widening_reported(tmp_path):
    pool, metadata, truth = planted_pool(tmp_path)
    config = DebiasConfig(str(pool), str(metadata), max_drop=0.05, min_concept_rows=50)
    summary = run(config, LOCAL)[-1].summary
    assert summary["kept_share"] >= 0.95
    assert summary["relaxation"] > 1  # first order given up, the association bound widened
    assert summary["association_after"] < summary["association_before"]
    assert summary["association_after"] <= summary["planned_association_bound"] + 0.02


def test_same_seed_gives_identical_bytes_and_an_interrupted_run_finishes_the_same(
    debiased, tmp_path
):
    root, pool, metadata, _truth, config, _summary = debiased
    out = pool / "curation" / "debias"
    names = [p.name for p in sorted(out.glob("0*.parquet"))] + ["debias_concepts.parquet"]
    first = {name: (out / name).read_bytes() for name in names}
    # a run killed during the sampling pass: one shard's output and marker never written
    (out / "00002.parquet").unlink()
    (out / "_stats" / "debias" / "00002.json").unlink()
    (out / "debias_concepts.parquet").unlink()
    assert all(r.ok for r in run(config, LOCAL))
    assert {name: (out / name).read_bytes() for name in names} == first
    # a run killed during the counting pass: one count shard and every later output missing
    (out / "_counts" / "00001.parquet").unlink()
    (out / "_stats" / "debias_count" / "00001.json").unlink()
    for name in names:
        (out / name).unlink()
    fsio.remove(str(out / "_stats" / "debias"))
    assert all(r.ok for r in run(config, LOCAL))
    assert {name: (out / name).read_bytes() for name in names} == first
    fsio.remove(str(out))  # from scratch, through Ray this time
    assert all(r.ok for r in run(config, RunOptions(seed=7, progress=False)))
    assert {name: (out / name).read_bytes() for name in names} == first


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["debias_count", "debias"])
def test_a_killed_process_resumes_to_identical_outputs(debiased, tmp_path, stage):
    _root, reference, *_ = debiased
    pool, metadata, _truth = planted_pool(tmp_path)
    args = ["debias", "--pool", str(pool), "--metadata", str(metadata), "--seed", "7"]
    args += ["--max-drop", "0.3", "--min-concept-rows", "50", "--no-ray", "--no-progress"]
    out = pool / "curation" / "debias"
    kill_mid_pass_then_resume("curation.stages.debias", stage, args, out)
    expected = reference / "curation" / "debias"
    names = [p.name for p in sorted(expected.glob("0*.parquet"))] + ["debias_concepts.parquet"]
    assert {n: (out / n).read_bytes() for n in names} == {
        n: (expected / n).read_bytes() for n in names
    }


def test_shards_require_debias_drops_exactly_the_rows_it_says(debiased):
    root, pool, _metadata, _truth, _config, _summary = debiased
    train = root / "train"
    reports = run_shards(
        ShardsConfig(str(pool), str(train), samples_per_shard=500, require=("debias",)),
        RunOptions(seed=1, use_ray=False, progress=False),
    )
    assert all(r.ok for r in reports)
    written = pa.concat_tables([pq.read_table(p) for p in sorted(train.glob("*.parquet"))])
    columns = debias_columns(pool)
    kept = {u for u, k in zip(columns["uid"].to_pylist(), columns["keep_debias"]) if k.as_py()}
    assert sorted(written["uid"].to_pylist()) == sorted(kept)
    plan = json.loads((train / "_plan" / "plan.json").read_text())
    assert plan["applied"] == ["debias"]


def test_bad_settings_fail_fast_with_exit_code_2(debiased, tmp_path, capsys):
    _root, pool, metadata, *_ = debiased
    with pytest.raises(ConfigError):
        DebiasConfig("pool", "m", tolerance=0.1, max_association=0.05)
    wrong_values = DebiasConfig("pool", "m", representation={"female": 0.5, "other": 0.5})
    with pytest.raises(ConfigError):
        wrong_values.targets(["female", "male"])
    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps({"values": {"a": ["x"]}}))
    base = ["debias", "--pool", str(pool), "--metadata", str(metadata), "--no-ray"]
    assert main(base + ["--attribute-terms", str(terms)]) == 2
    assert "at least two values" in capsys.readouterr().err
    assert main(base + ["--max-association", "0.2"]) == 2  # other settings than the folder's
    assert "planned from other inputs" in capsys.readouterr().err


def test_user_terms_replace_the_default_list(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    texts = ["a young chef cooking"] * 90 + ["an old chef cooking"] * 10 + ["a chef"] * 50
    write_text_pool(pool, texts, 100)
    (tmp_path / "m.txt").write_text("chef\n")
    terms = tmp_path / "age.json"
    terms.write_text(
        json.dumps({"attribute": "age", "values": {"young": ["young"], "old": ["old"]}})
    )
    config = DebiasConfig(
        str(pool),
        str(tmp_path / "m.txt"),
        attribute_terms=str(terms),
        min_concept_rows=10,
        max_drop=0.9,
        max_association=0.3,
        tolerance=0.3,
    )
    summary = run(config, LOCAL)[-1].summary
    assert summary["attribute"] == "age"
    assert summary["rows_per_label_before"] == {"young": 90, "old": 10, "(none)": 50}
    assert summary["representation_after"]["young"] <= 0.8 + 0.1
