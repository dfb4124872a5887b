"""Phase 1 → phase 2 in one run: the teachers, the phase-2 terms, and exact resumes around the
boundary."""

import json
import shutil

import pytest
import torch

from tests.training.test_trainer import LOGGED, one_thread, tiny_args  # noqa: F401 (fixture)
from training.checkpoint import LATEST, has_extra_model, saved_module_weights, step_dir_name
from training.config import ConfigError
from training.distributed import DistEnv
from training.metrics_log import read_metrics
from training.trainer import Trainer, make_loader, train

PHASE2_TERMS = ("silc", "tips", "gram", "koleo")
CROPS = {"local_crops": 2, "local_crop_size": 24}


def rewind_run(run, crash_after: int, last_step: int) -> None:
    """Leave `run` as a crash right after step `crash_after`'s checkpoint would have: later
    checkpoints gone, LATEST pointing back, metrics.jsonl cut to the steps that were logged."""
    checkpoints = run / "checkpoints"
    for step in range(crash_after + 1, last_step + 1):
        shutil.rmtree(checkpoints / step_dir_name(step), ignore_errors=True)
    (checkpoints / LATEST).write_text(step_dir_name(crash_after))
    lines = (run / "metrics.jsonl").read_text().splitlines()[:crash_after]
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


def phase2_args(world, out, steps, phase2_start, **sections):
    data = {**CROPS, **sections.pop("data", {})}
    return tiny_args(
        world,
        out,
        steps=steps,
        schedule={"steps": steps, "phase2_start": phase2_start},
        data=data,
        **sections,
    )


def test_a_run_crossing_into_phase_2_logs_finite_distillation_terms(shard_world, tmp_path):
    train(phase2_args(shard_world, tmp_path / "run", steps=3, phase2_start=0.5))
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    # Phase 2 starts at step index 2 (2 / 3 >= 0.5): the third logged step.
    assert [r["phase"] for r in records] == [1, 1, 2]
    assert not any(term in records[0] for term in PHASE2_TERMS)
    for term in ("loss", *PHASE2_TERMS):
        assert torch.isfinite(torch.tensor(records[2][term])), term
    folder = tmp_path / "run" / "checkpoints" / step_dir_name(3)
    assert has_extra_model(folder, "teacher") and has_extra_model(folder, "gram_teacher")


def boundary_args(world, out):
    """5 steps, phase 2 from step index 3: the step-2 checkpoint has no teachers (a resume
    creates them at the boundary), the step-4 checkpoint restores them."""
    return phase2_args(world, out, steps=5, phase2_start=0.6, checkpoint={"every": 2})


@pytest.fixture(scope="module")
def boundary_run(shard_world, tmp_path_factory):
    """The uninterrupted run both resume cases copy and then rewind (one run, not one a case)."""
    run = tmp_path_factory.mktemp("boundary") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_thread does: the resumes must match it bit for bit
    try:
        train(boundary_args(shard_world, run))
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.mark.parametrize("crash_after", [2, 4], ids=["before_boundary", "inside_phase2"])
def test_resume_around_the_phase_boundary_matches_the_uninterrupted_run(
    shard_world, boundary_run, tmp_path, one_thread, crash_after
):  # noqa: F811 (fixture)
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    shutil.copytree(boundary_run, run)
    args = boundary_args(shard_world, run)
    uninterrupted = read_metrics(run / "metrics.jsonl")
    assert not has_extra_model(checkpoints / step_dir_name(2), "teacher")
    assert has_extra_model(checkpoints / step_dir_name(4), "teacher")
    final = {
        name: saved_module_weights(checkpoints / step_dir_name(5), name)
        for name in ("model", "teacher", "gram_teacher")
    }

    rewind_run(run, crash_after, last_step=5)
    train(args)

    resumed = read_metrics(run / "metrics.jsonl")
    assert [r["phase"] for r in resumed] == [1, 1, 1, 2, 2]
    for before, after in zip(uninterrupted, resumed, strict=True):
        for key in LOGGED + (PHASE2_TERMS if before["phase"] == 2 else ()):
            assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-6), (
                before["step"],
                key,
            )
    for name, weights in final.items():
        again = saved_module_weights(checkpoints / step_dir_name(5), name)
        for key, tensor in weights.items():
            torch.testing.assert_close(again[key], tensor, rtol=1e-5, atol=1e-6)


def test_the_teacher_is_an_exponential_moving_average_of_the_student(shard_world, tmp_path):
    momentum = 0.9
    args = phase2_args(
        shard_world, tmp_path / "run", steps=4, phase2_start=0.0, loss={"ema_momentum": momentum}
    ).resolve()
    trainer = Trainer(args, DistEnv(0, 1, 0, torch.device("cpu")))
    loader = make_loader(args, trainer.model_cfg, trainer.env, trainer.tokenizer)
    trainer.train_step(next(loader))  # creates the teachers from the student, then moves one
    name = "vision.patch_embedding.weight"
    teacher_before = dict(trainer.teacher.named_parameters())[name].clone()
    gram_before = dict(trainer.gram_teacher.named_parameters())[name].clone()
    trainer.train_step(next(loader))
    student = dict(trainer.bare_model.named_parameters())[name]
    teacher = dict(trainer.teacher.named_parameters())[name]
    assert not torch.equal(teacher, teacher_before)
    torch.testing.assert_close(teacher, momentum * teacher_before + (1 - momentum) * student)
    torch.testing.assert_close(dict(trainer.gram_teacher.named_parameters())[name], gram_before)


def named(module, name="vision.patch_embedding.weight"):
    return dict(module.named_parameters())[name].detach().clone()


def test_the_gram_teacher_is_refreshed_from_the_ema_teacher_every_k_steps_at_most_m_times(
    shard_world, tmp_path
):
    args = phase2_args(
        shard_world,
        tmp_path / "run",
        steps=8,
        phase2_start=0.25,
        loss={"gram_refresh_every": 2, "gram_refresh_max": 2},
    ).resolve()
    trainer = Trainer(args, DistEnv(0, 1, 0, torch.device("cpu")))
    loader = make_loader(args, trainer.model_cfg, trainer.env, trainer.tokenizer)
    gram, teacher = [], []
    for _ in range(8):  # phase 2 from step index 2: refreshes before steps 4 and 6, not 8
        trainer.train_step(next(loader))
        if trainer.teacher is not None:
            gram.append(named(trainer.gram_teacher))
            teacher.append(named(trainer.teacher))
    # gram[i] / teacher[i]: after step index 2 + i. A refresh before step s copies the EMA
    # teacher as it was after step s - 1.
    assert torch.equal(gram[0], gram[1])
    assert torch.equal(gram[2], teacher[1]) and torch.equal(gram[3], gram[2])
    assert torch.equal(gram[4], teacher[3]) and torch.equal(gram[5], gram[4])
    assert not torch.equal(gram[5], teacher[5])
    assert trainer.gram_refreshes == 2 and trainer.state_dict()["gram_refreshes"] == 2


def test_resume_between_gram_refreshes_matches_the_uninterrupted_run(
    shard_world, tmp_path, one_thread
):  # noqa: F811
    args = phase2_args(
        shard_world,
        tmp_path / "run",
        steps=6,
        phase2_start=0.0,
        loss={"gram_refresh_every": 2, "gram_refresh_max": 2},
        checkpoint={"every": 3},
    )
    train(args)
    checkpoints = tmp_path / "run" / "checkpoints"
    final = saved_module_weights(checkpoints / step_dir_name(6), "gram_teacher")
    assert (
        json.loads((checkpoints / step_dir_name(3) / "trainer.json").read_text())["gram_refreshes"]
        == 1
    )
    shutil.rmtree(checkpoints / step_dir_name(6))
    (checkpoints / LATEST).write_text(step_dir_name(3))
    train(args)
    again = saved_module_weights(checkpoints / step_dir_name(6), "gram_teacher")
    for key, tensor in final.items():
        torch.testing.assert_close(again[key], tensor, rtol=1e-5, atol=1e-6)
    assert (
        json.loads((checkpoints / step_dir_name(6) / "trainer.json").read_text())["gram_refreshes"]
        == 2
    )


def test_phase2_batches_carry_local_crops_of_the_configured_size(shard_world, tmp_path):
    args = phase2_args(shard_world, tmp_path / "run", steps=4, phase2_start=0.5).resolve()
    trainer = Trainer(args, DistEnv(0, 1, 0, torch.device("cpu")))
    batches = make_loader(args, trainer.model_cfg, trainer.env, trainer.tokenizer)
    # Phase-1 steps (0 and 1) skip the crops and the larger decode they need.
    assert ["local_crops" in next(batches) for _ in range(3)] == [False, False, True]
    batch = next(batches)
    assert batch["local_crops"].shape == (8, 2, 3, 24, 24)
    assert batch["local_crops"].abs().max() <= 1.0 + 1e-4
    phase1_only = tiny_args(shard_world, tmp_path / "p1").resolve()
    assert "local_crops" not in next(
        make_loader(phase1_only, trainer.model_cfg, trainer.env, trainer.tokenizer)
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ({"schedule": {"phase2_start": 1.5}}, "phase2_start"),
        ({"schedule": {"phase2_start": 0.5}, "data": {"local_crops": 0}}, "local_crops"),
        ({"schedule": {"phase2_start": 0.5}, "loss": {"ema_momentum": 1.2}}, "ema_momentum"),
        ({"loss": {"gram_refresh_every": -1}}, "gram_refresh_every"),
    ],
)
def test_bad_phase_settings_are_refused_with_the_key(shard_world, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_args(shard_world, tmp_path, **override).resolve()
