"""Phase 2 → phase 3 (NaFlex) in one run: the per-step length, the objective, and exact resumes
around the boundary."""

import shutil

import pytest
import torch

from tests.training.test_phase_schedule import PHASE2_TERMS, phase2_args, rewind_run
from tests.training.test_trainer import LOGGED, one_thread, tiny_args  # noqa: F401 (fixture)
from training.checkpoint import has_extra_model, saved_module_weights, step_dir_name
from training.config import ConfigError
from training.metrics_log import read_metrics
from training.models.config import model_config
from training.trainer import naflex_schedule, train

TINY_SEQ_LENS = [32, 64, 144, 196, 256]  # SigLIP 2's lengths × 64/256 (tiny's 8 x 8 grid)


def phase3_args(world, out, steps=5, phase2_start=0.2, phase3_start=0.6, **sections):
    # 5 steps: phase 1 is step index 0, phase 2 steps 1-2, phase 3 steps 3-4.
    args = phase2_args(world, out, steps=steps, phase2_start=phase2_start, **sections)
    args.schedule.phase3_start = phase3_start
    args.schedule.phase3_distill = sections.get("schedule", {}).get("phase3_distill", True)
    return args


@pytest.fixture(scope="module")
def uninterrupted(native_world, tmp_path_factory):
    """One uninterrupted run through phases 1 → 2 → 3 on native-size shards, checkpoints every
    2 steps: the reference for the resume tests."""
    run = tmp_path_factory.mktemp("phase3") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(phase3_args(native_world, run, checkpoint={"every": 2}))
    finally:
        torch.set_num_threads(threads)
    return run


def test_phase_3_trains_on_naflex_lengths_with_the_phase_2_objective(uninterrupted):
    records = read_metrics(uninterrupted / "metrics.jsonl")
    assert [r["phase"] for r in records] == [1, 2, 2, 3, 3]
    assert not any("seq_len" in r for r in records[:3])
    for record in records[3:]:
        assert record["seq_len"] in TINY_SEQ_LENS
        for term in ("loss", "sigmoid", "locca", *PHASE2_TERMS):
            assert torch.isfinite(torch.tensor(record[term])), term
    assert has_extra_model(uninterrupted / "checkpoints" / step_dir_name(5), "teacher")


@pytest.mark.parametrize("crash_after", [2, 4], ids=["before_phase3", "inside_phase3"])
def test_resume_around_the_phase_3_boundary_matches_the_uninterrupted_run(
    native_world, uninterrupted, tmp_path, one_thread, crash_after
):  # noqa: F811 (fixture)
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    checkpoints = run / "checkpoints"
    final = {
        name: saved_module_weights(checkpoints / step_dir_name(5), name)
        for name in ("model", "teacher", "gram_teacher")
    }
    rewind_run(run, crash_after, last_step=5)
    train(phase3_args(native_world, run, checkpoint={"every": 2}))

    reference = read_metrics(uninterrupted / "metrics.jsonl")
    resumed = read_metrics(run / "metrics.jsonl")
    for before, after in zip(reference, resumed, strict=True):
        keys = (
            LOGGED
            + (PHASE2_TERMS if before["phase"] >= 2 else ())
            + (("seq_len",) if before["phase"] == 3 else ())
        )
        for key in keys:
            assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-6), (
                before["step"],
                key,
            )
    for name, weights in final.items():
        again = saved_module_weights(checkpoints / step_dir_name(5), name)
        for key, tensor in weights.items():
            torch.testing.assert_close(again[key], tensor, rtol=1e-5, atol=1e-6)


def test_phase_3_without_distillation_trains_phase_1_losses_and_leaves_the_teachers(
    shard_world, tmp_path
):
    run = tmp_path / "run"
    args = phase3_args(
        shard_world, run, steps=4, phase2_start=0.25, phase3_start=0.5, checkpoint={"every": 2}
    )
    args.schedule.phase3_distill = False
    train(args)
    records = read_metrics(run / "metrics.jsonl")
    assert [r["phase"] for r in records] == [1, 2, 3, 3]
    assert "silc" in records[1] and not any(t in records[3] for t in PHASE2_TERMS)
    assert "seq_len" in records[3] and "sigmoid" in records[3]
    # The teacher stops moving when distillation stops.
    at_2, at_4 = (
        saved_module_weights(run / "checkpoints" / step_dir_name(s), "teacher") for s in (2, 4)
    )
    assert all(torch.equal(at_2[k], at_4[k]) for k in at_2)


def test_default_lengths_scale_siglip2s_list_to_the_preset(shard_world, tmp_path):
    args = phase3_args(shard_world, tmp_path, steps=10).resolve()
    schedule = naflex_schedule(args, model_config("tiny"))
    assert list(schedule.seq_lens) == TINY_SEQ_LENS
    assert schedule.start_step == 6 and schedule.token_budget == 8 * 64
    b16 = naflex_schedule(args, model_config("b16"))
    assert list(b16.seq_lens) == [128, 256, 576, 784, 1024]
    # A small batch's default budget still holds 2 samples of the longest length.
    args.data.batch_size = 2
    assert naflex_schedule(args, model_config("tiny")).token_budget == 2 * 256
    # A run too short to reach phase 3 needs no NaFlex settings at all.
    args.schedule.steps = 2
    assert naflex_schedule(args, model_config("tiny")) is None


@pytest.mark.parametrize(
    "override, message",
    [
        ({"schedule": {"phase2_start": 0.8, "phase3_start": 0.5}}, "phase3_start"),
        ({"schedule": {"phase3_start": 1.5}}, "phase3_start"),
        (
            {"schedule": {"phase3_start": 0.5}, "data": {"naflex_seq_lens": [0, 64]}},
            "naflex_seq_lens",
        ),
        (
            {"schedule": {"phase3_start": 0.5}, "data": {"naflex_token_budget": 0}},
            "naflex_token_budget",
        ),
        # 300 patches hold only one sample of tiny's longest length (256).
        (
            {"schedule": {"phase3_start": 0.5}, "data": {"naflex_token_budget": 300}},
            "naflex_token_budget=300 leaves fewer than 2",
        ),
    ],
)
def test_bad_phase3_settings_are_refused_with_the_key(shard_world, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_args(shard_world, tmp_path, **override).resolve()
