"""`make demo`'s chain at the smallest size: every step runs and report.json holds the three arms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_the_whole_chain_and_reports_three_arms_with_standard_errors(tmp_path):
    out = tmp_path / "demo"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "curation",
            "demo",
            "--out",
            str(out),
            "--scale",
            "tiny",
            "--train-steps",
            "3",
            # Every arm also on training seed 1: the differences over seeds.
            "--arm-seeds",
            "2",
            # Not the default port: a demo someone runs beside the tests must not collide with it.
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    arms = report["arms"]
    assert set(arms) == {"round0", "round1", "reference"}
    for arm in arms.values():
        assert arm["samples"] > 0
        assert 0.0 <= arm["correct_caption_share"] <= 1.0
        zeroshot = arm["metrics"]["zeroshot/top1"]
        assert 0.0 <= zeroshot["value"] <= 1.0 and zeroshot["se"] > 0
        assert arm["metrics"]["retrieval/text_to_image_R@1"]["se"] is not None
    # Round 1 keeps only the top fraction of the pool by the round-0 encoder's score; the
    # reference keeps round 0's correctly captioned pairs, all of them.
    assert arms["round1"]["samples"] < arms["round0"]["samples"]
    assert arms["reference"]["correct_caption_share"] == 1.0
    assert arms["reference"]["samples"] < arms["round0"]["samples"]
    # The reference arm trained beside round 0 and round 1 beside the reported filters (their
    # logs kept apart); the wall clock counts them once.
    for arm, run in (("reference", "train_reference"), ("round 1", "train")):
        assert f"train + evaluate tiny ({arm})" in report["timings"]
        log = (out / "logs" / f"{arm.replace(' ', '')}.log").read_text()
        assert str(out / run / "checkpoints") in log  # the eval's output names its checkpoint
    assert "faces" in report["filters"] and "nsfw" in report["filters"]
    # Round 1 kept by the cross-fit scorers (one per fold of round 0's pairs, trained without
    # it); the round-0 encoder's own choice is reported beside, on the same candidates.
    scoring = report["scoring"]
    assert (scoring["folds"], scoring["seeds"], scoring["scorer_steps"]) == (3, 1, 3)
    assert scoring["cross_fit"]["kept"] == arms["round1"]["samples"]
    assert scoring["cross_fit"]["correct_caption_share"] == pytest.approx(
        arms["round1"]["correct_caption_share"], abs=1e-4
    )
    assert 0 < scoring["round0_encoder"]["kept"] <= arms["round0"]["samples"]
    # Round 1 against round 0 and against the reference, paired on the same eval trials: the
    # difference is the arms' own values' difference.
    for pair, (a, b) in {
        "round1 - round0": ("round1", "round0"),
        "round1 - reference": ("round1", "reference"),
    }.items():
        for metric in ("zeroshot/top1", "retrieval/text_to_image_R@1"):
            entry = report["comparisons"][pair][metric]
            expected = arms[a]["metrics"][metric]["value"] - arms[b]["metrics"][metric]["value"]
            assert entry["difference"] == pytest.approx(expected, abs=1e-6)
            assert entry["se"] >= 0 and entry["trials"] > 0
    # Over training seeds 0 and 1: seed k of round 1 minus seed k of round 0, per metric.
    assert report["arm_seeds"] == 2
    over_seeds = report["comparisons_over_seeds"]["round1 - round0"]["zeroshot/top1"]
    assert over_seeds["seeds"] == 2 and over_seeds["differences"][0] == pytest.approx(
        report["comparisons"]["round1 - round0"]["zeroshot/top1"]["difference"], abs=1e-6
    )
    for run in ("train_round0_seed1", "train_seed1", "train_reference_seed1"):
        assert list((out / run / "eval").glob("step_*.json"))
    assert "the same differences over training seeds 0..1" in done.stdout
    for fold in (0, 1, 2):
        assert (
            out / "scorer_folds" / "3_folds_3_steps" / f"run_{fold}_seed0" / "open_clip"
        ).is_dir()
    assert (
        "train + export tiny (scorer of fold 0, seed 0; scorer of fold 1, seed 0)"
        in (report["timings"])
    )
    assert "train tiny (scorer of fold 2, seed 0)" in report["timings"]
    assert report["wall_seconds"] < sum(report["timings"].values())
    assert "round0" in done.stdout and "±" in done.stdout
    assert (out / "train" / "metrics.jsonl").exists() and "browse it: make dashboard" in done.stdout
