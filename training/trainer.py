"""Training (phases 1, 2 and 3): build, resume, loop, log, checkpoint. Read it top to bottom.

`Trainer` owns the model, optimizer and schedule and knows one thing: how to take a step on a
batch. `train(args)` wires it to the data loader, checkpoints and logs, and is what
`python -m training train` (alone or under torchrun) runs.

Phase 2 starts at step round(schedule.phase2_start × steps): the first phase-2 step copies the
student into an EMA teacher and a frozen Gram teacher; every later optimizer step moves the EMA
teacher toward the student, and every loss.gram_refresh_every distilling steps (at most
loss.gram_refresh_max times) the Gram teacher becomes a copy of the EMA teacher. Both teachers
and the refresh count travel in the checkpoints, so a resume on either side of the boundary
continues exactly.

Phase 3 starts at step round(schedule.phase3_start × steps): from there the loader builds NaFlex
batches (a sequence length drawn per step from the step number, see training.data.naflex), and
the objective stays phase 2's (or phase 1's with schedule.phase3_distill=false). Nothing in the
trainer's own state changes at that boundary, so resuming across it needs nothing new.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.checkpoint import (
    has_extra_model,
    latest_checkpoint,
    load_checkpoint,
    load_extra_models,
    save_checkpoint,
)
from training.config import TrainArgs, to_dict
from training.data.batches import BatchShape
from training.data.loader import LoaderSpec, ResumableLoader
from training.data.naflex import NaFlexSchedule
from training.distributed import (
    DistEnv,
    clip_gradients,
    init_distributed,
    mean_across_ranks,
    parallelize,
    reshard,
    set_block_options,
    set_cpu_threads,
    shutdown_distributed,
    unwrap,
)
from training.metrics_log import MetricsLogger, peak_flops, train_flops_per_sample
from training.models.config import ModelConfig, model_config
from training.models.distill import ema_update, local_parameters, make_ema_teacher
from training.models.siglip import SigLIP2
from training.objectives import phase1_loss, phase2_loss
from training.optim import build_optimizer, build_scheduler
from training.run_storage import join
from training.tokenizer import DEFAULT_BOX_BINS, TASKS, Tokenizer

log = logging.getLogger(__name__)


def seed_everything(*seed: int) -> None:
    """Seed python, numpy and torch from a tuple of integers (e.g. run seed and rank)."""
    value = int(np.random.SeedSequence(list(seed)).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def make_tokenizer(path: str | None, box_bins: int = DEFAULT_BOX_BINS) -> Tokenizer:
    """The run's tokenizer: a local tokenizer.json, or the CLIP BPE open_clip ships (offline)."""
    return Tokenizer.from_file(path, box_bins=box_bins) if path else Tokenizer(box_bins=box_bins)


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


class Trainer:
    def __init__(self, args: TrainArgs, env: DistEnv) -> None:
        self.args, self.env = args, env
        self.tokenizer = make_tokenizer(args.model.tokenizer, args.model.box_bins)
        # The text and decoder vocabularies follow the tokenizer (BPE + box bins + task tokens).
        self.model_cfg: ModelConfig = model_config(
            args.model.preset,
            **{"text.vocab_size": self.tokenizer.vocab_size, **args.model.overrides},
        )
        # Same init on every rank (FSDP shards each rank's own copy, so they must agree).
        seed_everything(args.seed)
        self.dtype = compute_dtype(args.distributed.precision, env.device)
        bare = SigLIP2(self.model_cfg).to(env.device)
        set_block_options(bare, args.model.compile, args.model.activation_checkpointing)
        self.model = parallelize(
            bare,
            env,
            args.distributed.parallelism,
            param_dtype=self.dtype if self.dtype != torch.float32 else None,
        )
        self.optim_cfg = replace(args.optim, total_steps=args.schedule.steps)
        self.optimizer = build_optimizer(unwrap(self.model), self.optim_cfg)
        self.scheduler = build_scheduler(self.optimizer, self.optim_cfg)
        self.step = 0
        # Phase 2's targets: created by start_phase2 (first phase-2 step, or a phase-2 resume).
        self.teacher: torch.nn.Module | None = None
        self.gram_teacher: torch.nn.Module | None = None
        self.gram_refreshes = 0
        self.first_distill_step = args.schedule.distill_steps().start
        # Whether the DDP wrapper learned its static graph on a distilling step (None: no step
        # yet); a change of objective changes the used parameters, so the model is re-wrapped.
        self.wrapped_for_distill: bool | None = None
        # From here on, randomness (parallel-prediction draws) differs per rank.
        seed_everything(args.seed, env.rank + 1)

    @property
    def bare_model(self) -> SigLIP2:
        return unwrap(self.model)

    @property
    def phase(self) -> int:
        """The phase of the next step."""
        return self.args.schedule.phase_at(self.step)

    def start_phase2(self) -> None:
        """Copy the student into the EMA teacher and the frozen Gram teacher."""
        self.teacher = self._frozen_copy_of_student()
        self.gram_teacher = self._frozen_copy_of_student()  # changed only by refreshes

    def _refresh_gram_teacher_if_due(self) -> None:
        """Copy the EMA teacher into the Gram teacher every loss.gram_refresh_every distilling
        steps, at most loss.gram_refresh_max times."""
        every, most = self.args.loss.gram_refresh_every, self.args.loss.gram_refresh_max
        since_start = self.step - self.first_distill_step
        if (
            not every
            or since_start <= 0
            or since_start % every
            or (most is not None and self.gram_refreshes >= most)
        ):
            return
        with torch.no_grad():
            for target, source in zip(
                local_parameters(self.gram_teacher) + list(self.gram_teacher.buffers()),
                local_parameters(self.teacher) + list(self.teacher.buffers()),
                strict=True,
            ):
                target.copy_(source)
        self.gram_refreshes += 1

    def _wrap_for(self, distill: bool) -> None:
        """Re-wrap DDP when the objective changes: its static graph was learned on the other
        objective's set of used parameters."""
        previous, self.wrapped_for_distill = self.wrapped_for_distill, distill
        bare = self.bare_model
        if previous in (None, distill) or self.model is bare:
            return
        if self.args.distributed.parallelism == "ddp":
            self.model = bare  # drop the old wrapper (and its gradient hooks) first
            self.model = parallelize(bare, self.env, "ddp")

    def _frozen_copy_of_student(self) -> torch.nn.Module:
        """A gradient-free copy of the student, sharded like it under FSDP2 (which cannot be
        deep-copied): built on the meta device (no init, so no draw from the RNG a resume
        restores), sharded, then filled with the student's local shards and buffers."""
        bare = self.bare_model
        if self.args.distributed.parallelism != "fsdp" or not self.env.is_distributed:
            return make_ema_teacher(bare)
        with torch.device("meta"):
            copy = SigLIP2(self.model_cfg)
        copy = parallelize(
            copy, self.env, "fsdp", param_dtype=self.dtype if self.dtype != torch.float32 else None
        )
        copy.to_empty(device=self.env.device)
        with torch.no_grad():
            for target, source in zip(
                list(copy.parameters()) + list(copy.buffers()),
                list(bare.parameters()) + list(bare.buffers()),
                strict=True,
            ):
                target.copy_(source)
        for param in copy.parameters():
            param.requires_grad_(False)
        return copy.eval()

    def teacher_models(self) -> dict[str, torch.nn.Module]:
        """Modules saved beside the model in checkpoints (none before phase 2)."""
        if self.teacher is None:
            return {}
        return {"teacher": self.teacher, "gram_teacher": self.gram_teacher}

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.dtype)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on one batch; returns this rank's loss terms, lr and grad norm."""
        self.model.train()
        batch = {k: v.to(self.env.device, non_blocking=True) for k, v in batch.items()}
        distill = self.args.schedule.distills_at(self.step)
        if distill and self.teacher is None:
            self.start_phase2()
        if distill:
            self._refresh_gram_teacher_if_due()
        self._wrap_for(distill)
        with self._autocast():
            if distill:
                loss, terms = phase2_loss(
                    self.model, self.teacher, batch, self.args.loss, self.gram_teacher
                )
            else:
                loss, terms = phase1_loss(self.model, batch, self.args.loss)
        loss.backward()
        for teacher in self.teacher_models().values():
            reshard(teacher)
        grad_norm = clip_gradients(self.model, self.args.grad_clip_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if distill:
            ema_update(self.teacher, self.bare_model, self.args.loss.ema_momentum)
        self.scheduler.step()
        self.step += 1
        if "patch_mask" in batch:  # phase 3: the step's NaFlex sequence length
            terms["seq_len"] = float(batch["patch_mask"].shape[1])
        return {**terms, "lr": lr, "grad_norm": grad_norm}

    def state_dict(self) -> dict[str, Any]:
        """Trainer counters and schedule; weights and optimizer state go through checkpoint.py."""
        return {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "gram_refreshes": self.gram_refreshes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.scheduler.load_state_dict(state["scheduler"])
        self.gram_refreshes = state.get("gram_refreshes", 0)


def local_crop_size(args: TrainArgs, model_cfg: ModelConfig) -> int:
    """data.local_crop_size, or 3/8 of the image side in whole patches; checked against them."""
    patch, image = model_cfg.vision.patch_size, model_cfg.vision.image_size
    size = args.data.local_crop_size or max(patch, image * 3 // 8 // patch * patch)
    if size % patch or not 0 < size <= image:
        raise ValueError(
            f"data.local_crop_size={size} must be a multiple of the patch size "
            f"{patch} and at most the image size {image}"
        )
    return size


def naflex_schedule(args: TrainArgs, model_cfg: ModelConfig) -> NaFlexSchedule | None:
    """Phase 3's sequence lengths and token budget (see DataArgs), or None without phase 3."""
    if not args.reaches_phase3:
        return None
    vision = model_cfg.vision
    return NaFlexSchedule.build(
        args.schedule.first_step_of(3),
        args.seed,
        args.data.batch_size,
        (vision.image_size // vision.patch_size) ** 2,
        args.data.naflex_seq_lens,
        args.data.naflex_token_budget,
    )


def make_loader(
    args: TrainArgs, model_cfg: ModelConfig, env: DistEnv, tokenizer: Tokenizer
) -> ResumableLoader:
    crops = args.data.local_crops if args.distills else 0
    shape = BatchShape(
        batch_size=args.data.batch_size,
        grounding_per_batch=args.data.grounding_per_batch,
        image_size=model_cfg.vision.image_size,
        context_length=model_cfg.text.context_length,
        locca_max_len=model_cfg.decoder.max_len,
        local_crops=crops,
        local_crop_size=local_crop_size(args, model_cfg) if crops else 0,
        patch_size=model_cfg.vision.patch_size,
    )
    spec = LoaderSpec(
        args.data.text_shards,
        args.data.grounding_shards,
        shape,
        args.seed,
        env.rank,
        env.world_size,
        args.data.num_workers,
        args.data.max_consecutive_bad,
        naflex_schedule(args, model_cfg),
        args.schedule.distill_steps(),
    )
    return ResumableLoader(spec, tokenizer, pin_memory=env.device.type == "cuda")


class Throughput:
    """Samples/s over the last logging window, and MFU when the accelerator's peak is known.
    Batches are counted as they come: phase-3 batches vary in size and sequence length."""

    def __init__(self, model: SigLIP2, env: DistEnv) -> None:
        self.model, self.world_size = model, env.world_size
        self.flops_by_tokens: dict[int, float] = {}  # per sample, by its image tokens
        vision = model.cfg.vision
        self.square_tokens = (vision.image_size // vision.patch_size) ** 2
        self.flops_per_sample = self.flops_at(self.square_tokens)  # a phase-1 (square) sample
        device_peak = (
            peak_flops(torch.cuda.get_device_name(env.device))
            if env.device.type == "cuda"
            else None
        )
        self.peak = device_peak * env.world_size if device_peak else None
        self.mark()

    def count(self, batch: dict[str, torch.Tensor]) -> None:
        """Add one step's batch (this rank's; every rank's batch has the same shape)."""
        image_tokens = batch["patch_mask"].shape[1] if "patch_mask" in batch else self.square_tokens
        samples = batch["contrastive"].shape[0] * self.world_size
        self.samples += samples
        self.flops += samples * self.flops_at(image_tokens)

    def flops_at(self, image_tokens: int) -> float:
        """Training FLOPs of one sample with this many image tokens (padding included)."""
        if image_tokens not in self.flops_by_tokens:
            cfg = self.model.cfg
            self.flops_by_tokens[image_tokens] = train_flops_per_sample(
                self.model,
                image_tokens=image_tokens,
                text_tokens=cfg.text.context_length,
                decoder_rows=len(TASKS),
                decoder_tokens=cfg.decoder.max_len,
            )
        return self.flops_by_tokens[image_tokens]

    def mark(self) -> None:
        self.samples, self.flops, self.since_time = 0, 0.0, time.perf_counter()

    def measure(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.since_time, 1e-9)
        values = {"samples_per_s": self.samples / elapsed}
        if self.peak:
            values["mfu"] = self.flops / elapsed / self.peak
        self.mark()
        return values


def window_means(window: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the logging window, ignoring NaN (a task absent from a batch)
    and steps without the metric (phase-2 terms in a window that crosses the boundary)."""
    means = {}
    for key in dict.fromkeys(k for w in window for k in w):
        finite = [w[key] for w in window if key in w and not np.isnan(w[key])]
        means[key] = float(np.mean(finite)) if finite else float("nan")
    return means


def train(args: TrainArgs) -> str:
    """Run (or resume) training to args.schedule.steps; returns the last checkpoint's URL."""
    args.resolve()
    env = init_distributed(args.distributed.timeout_s)
    set_cpu_threads(env, args.data.num_workers)
    try:
        return _train(args, env)
    finally:
        shutdown_distributed()


def _train(args: TrainArgs, env: DistEnv) -> str:
    checkpoints = join(args.out, "checkpoints")
    trainer = Trainer(args, env)
    loader = make_loader(args, trainer.model_cfg, env, trainer.tokenizer)
    folder = latest_checkpoint(checkpoints) if args.checkpoint.resume else None
    if folder is not None:
        restored = load_checkpoint(folder, trainer.model, trainer.optimizer)
        trainer.load_state_dict(restored.trainer_state)
        if restored.data_state is not None:
            loader.load_state_dict(restored.data_state)
        else:
            log.warning(
                "the checkpoint was written by %d ranks, this run has %d: weights and optimizer "
                "are resharded, the data starts a new epoch",
                restored.saved_world_size,
                env.world_size,
            )
            loader.continue_after(restored.data_states, trainer.step)
            seed_everything(args.seed, env.rank + 1, trainer.step)
        if has_extra_model(folder, "teacher"):
            trainer.start_phase2()
            load_extra_models(folder, trainer.teacher_models())
        if env.is_main:
            log.info("resumed from %s at step %d", folder, trainer.step)
    config = {"model": trainer.model_cfg.to_dict(), "train": to_dict(args)}
    metrics = MetricsLogger(
        args.out,
        enabled=env.is_main,
        tensorboard=args.logging.tensorboard,
        start_step=trainer.step,
    )
    throughput = Throughput(trainer.bare_model, env)
    total = args.schedule.steps
    progress = tqdm(
        total=total,
        initial=trainer.step,
        dynamic_ncols=True,
        disable=not (env.is_main and args.logging.progress_bar),
    )
    window: list[dict[str, float]] = []
    while trainer.step < total:
        batch = next(loader)
        throughput.count(batch)
        window.append(trainer.train_step(batch))
        progress.update(1)
        step = trainer.step
        if step % args.logging.every == 0 or step == total:
            values = mean_across_ranks(window_means(window), env)
            # Skipped records, all ranks together (reasons are in the warnings on stderr).
            values["bad_samples"] = (
                env.world_size
                * mean_across_ranks({"n": float(sum(loader.bad_samples.values()))}, env)["n"]
            )
            values.update(throughput.measure())
            values["phase"] = args.schedule.phase_at(step - 1)
            metrics.log(step, values)
            progress.set_postfix(loss=f"{values['loss']:.3f}", sps=f"{values['samples_per_s']:.0f}")
            window = []
        if step % args.checkpoint.every == 0 or step == total:
            folder = save_checkpoint(
                checkpoints,
                step,
                trainer.model,
                trainer.optimizer,
                trainer.state_dict(),
                loader.state_dict(),
                config,
                args.checkpoint.keep,
                trainer.teacher_models(),
            )
            metrics.sync()
            throughput.mark()  # saving is not training time
    progress.close()
    metrics.close()
    return folder
