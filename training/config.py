"""Run configuration: nested dataclasses, one YAML per preset, dotlist overrides.

`TrainArgs` holds everything a run needs. A preset YAML (training/configs/NAME.yaml) fills it,
then `key.sub=value` overrides from the command line (values parsed as YAML, so `1e-3`, `true`,
`[0.8, 1.0]` work). Unknown keys fail with the full dotted name, so a typo never silently trains
with defaults. The resolved config is written into the run folder next to the checkpoints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.data.naflex import NaFlexSchedule
from training.models.config import model_config
from training.objectives import LossConfig
from training.optim import OptimConfig

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending key."""


@dataclass
class DataArgs:
    text_shards: str | list[str] | None = None  # image-text WebDataset shards (brace/glob URLs)
    grounding_shards: str | list[str] | None = None  # phrase+box shards (Raon's grounding batches)
    batch_size: int = 32  # per rank
    grounding_fraction: float = 0.25  # share of every batch taken from the grounding stream
    num_workers: int = 2  # loader processes per rank; 0 decodes in the training process
    max_consecutive_bad: int = 1000  # that many bad records in a row means the data is wrong
    # Phase 2: SILC student views per image (SigLIP 2 uses 8) and their side in pixels (a
    # multiple of the patch size; None: 3/8 of the image side, rounded down to whole patches).
    # Cut from the decoded original (not the square input) for the distilling steps' batches.
    local_crops: int = 8
    local_crop_size: int | None = None
    # Phase 3 (NaFlex): the sequence lengths (patches) one is drawn from per step (None: SigLIP
    # 2's 128, 256, 576, 784, 1024 scaled by the preset's phase-1 patch count / 256, so tiny's
    # 8 x 8 grid gets 32, 64, 144, 196, 256), and the most patches per rank per step, which sets
    # a length's batch size to min(batch_size, budget // length) (None: batch_size x phase 1's
    # patches, so no phase-3 step holds more patches than a phase-1 step; raised to 2 samples of
    # the longest length when that is more).
    naflex_seq_lens: list[int] | None = None
    naflex_token_budget: int | None = None

    @property
    def grounding_per_batch(self) -> int:
        return round(self.batch_size * self.grounding_fraction) if self.grounding_shards else 0


@dataclass
class TrainLossArgs(LossConfig):
    """The objectives' weights plus what the trainer needs around them."""

    # Phase 2: the EMA teacher update (teacher ← m·teacher + (1−m)·student).
    ema_momentum: float = 0.996
    # Gram anchoring's teacher starts as the phase-1-end student. With gram_refresh_every = K > 0
    # it is replaced by the EMA teacher every K distilling steps (DINOv3 refreshes it), at most
    # gram_refresh_max times (None: no limit). 0 keeps the phase-1-end teacher throughout.
    gram_refresh_every: int = 0
    gram_refresh_max: int | None = None


@dataclass
class ModelArgs:
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # fields of the preset's ModelConfig
    # A local Hugging Face tokenizer.json (e.g. Gemma's) or the name of one shipped in
    # training/tokenizers/; default: the CLIP BPE open_clip ships.
    tokenizer: str | None = None
    # Quantisation bins per box coordinate (LocCa's box tokens, appended to the vocabulary).
    box_bins: int = 1000
    # torch.compile each transformer block (GPU runs; slower to start, and on CPU often no gain).
    compile: bool = False
    # Recompute each block's activations in backward instead of keeping them (so400m: on).
    activation_checkpointing: bool = False


@dataclass
class ScheduleArgs:
    """Training length and where phases begin, as fractions of the total steps.

    Phase 1 (sigmoid + LocCa) runs from 0; phase 2 (self-distillation) and phase 3 (NaFlex) start
    at their fractions. 1.0 means the phase never starts. SigLIP 2 self-distils for the last 20%
    and adapts to NaFlex for the last 10% (phase2_start 0.8, phase3_start 0.9).

    Phase 3 continues phase 2's objective on NaFlex batches (phase3_distill): the EMA teacher
    keeps moving and SILC, TIPS, Gram anchoring and KoLeo stay on, with padding masked. DINOv3
    likewise keeps Gram anchoring through its resolution adaptation, where patch features are
    most at risk. SigLIP 2 (as we read its paper) trains its NaFlex variants without the
    self-distillation losses, for simplicity; phase3_distill=false does that (sigmoid + LocCa
    only, the teachers kept as they are).
    """

    steps: int = 1000
    phase2_start: float = 1.0
    phase3_start: float = 1.0
    phase3_distill: bool = True

    def phase_at(self, step: int) -> int:
        fraction = step / self.steps
        return 3 if fraction >= self.phase3_start else 2 if fraction >= self.phase2_start else 1

    def distills_at(self, step: int) -> bool:
        """Whether the step trains with the phase-2 losses against the teachers."""
        phase = self.phase_at(step)
        return phase == 2 or (phase == 3 and self.phase3_distill and self.phase2_start < 1.0)

    def distill_steps(self) -> range:
        """The steps with the phase-2 losses: one contiguous range (empty if none), whose start
        is where the teachers are created."""
        start = self.first_step_of(2)  # phase 2's first step, or phase 3's when it has none
        end = self.steps if self.phase3_distill else self.first_step_of(3)
        if self.phase2_start >= 1.0 or end <= start:
            return range(self.steps, self.steps)
        return range(start, end)

    def first_step_of(self, phase: int) -> int:
        """The first step of `phase` (steps if the run never reaches it)."""
        return next((s for s in range(self.steps) if self.phase_at(s) >= phase), self.steps)


@dataclass
class CheckpointArgs:
    every: int = 500  # steps between checkpoints (the last step always saves)
    keep: int = 2  # most recent checkpoints kept on disk; older ones are deleted
    resume: bool = True  # continue from OUT/checkpoints/latest when it exists


@dataclass
class LoggingArgs:
    every: int = 10  # steps between JSONL / TensorBoard records
    tensorboard: bool = True
    progress_bar: bool = True


@dataclass
class DistributedArgs:
    parallelism: str = "ddp"  # "ddp" or "fsdp" (FSDP2: fully_shard per block, then the root)
    precision: str = "auto"  # "auto" (bf16 autocast on GPU, fp32 on CPU), "bf16", "fp32"
    timeout_s: int = 600


@dataclass
class TrainArgs:
    out: str = "runs/default"
    seed: int = 0
    grad_clip_norm: float = 1.0  # 0 turns clipping off
    data: DataArgs = field(default_factory=DataArgs)
    model: ModelArgs = field(default_factory=ModelArgs)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: TrainLossArgs = field(default_factory=TrainLossArgs)
    schedule: ScheduleArgs = field(default_factory=ScheduleArgs)
    checkpoint: CheckpointArgs = field(default_factory=CheckpointArgs)
    logging: LoggingArgs = field(default_factory=LoggingArgs)
    distributed: DistributedArgs = field(default_factory=DistributedArgs)

    @property
    def distills(self) -> bool:
        """Whether any step trains with the phase-2 losses (so the loader makes local crops)."""
        return len(self.schedule.distill_steps()) > 0

    @property
    def reaches_phase3(self) -> bool:
        return self.schedule.first_step_of(3) < self.schedule.steps

    def resolve(self) -> TrainArgs:
        """Fill derived fields and check the whole config; returns self for chaining."""
        # The lr schedule always spans the run: one number (schedule.steps) sets both.
        self.optim.total_steps = self.schedule.steps
        data = self.data
        if not data.text_shards:
            raise ConfigError("data.text_shards is required (--data 'DIR/{00000..00009}.tar')")
        if not 0.0 <= data.grounding_fraction < 1.0:
            raise ConfigError(
                f"data.grounding_fraction={data.grounding_fraction} must be in [0, 1)"
            )
        if data.grounding_shards and not 0 < data.grounding_per_batch < data.batch_size:
            raise ConfigError(
                f"data.batch_size={data.batch_size} × grounding_fraction={data.grounding_fraction}"
                " leaves no grounding or no image-text samples per batch"
            )
        if self.schedule.steps <= 0:
            raise ConfigError("schedule.steps must be positive")
        if not 0.0 <= self.schedule.phase2_start <= 1.0:
            raise ConfigError(
                f"schedule.phase2_start={self.schedule.phase2_start} must be in [0, 1]"
            )
        if not 0.0 <= self.schedule.phase3_start <= 1.0:
            raise ConfigError(
                f"schedule.phase3_start={self.schedule.phase3_start} must be in [0, 1]"
            )
        if self.schedule.phase3_start < self.schedule.phase2_start < 1.0:
            raise ConfigError(
                f"schedule.phase3_start={self.schedule.phase3_start} comes before "
                f"phase2_start={self.schedule.phase2_start}"
            )
        if data.naflex_seq_lens is not None and (
            not data.naflex_seq_lens or min(data.naflex_seq_lens) < 1
        ):
            raise ConfigError(f"data.naflex_seq_lens={data.naflex_seq_lens}: positive lengths")
        if data.naflex_token_budget is not None and data.naflex_token_budget < 1:
            raise ConfigError(
                f"data.naflex_token_budget={data.naflex_token_budget} must be positive"
            )
        if self.reaches_phase3:
            vision = model_config(self.model.preset, **self.model.overrides).vision
            try:
                NaFlexSchedule.build(
                    0,
                    self.seed,
                    data.batch_size,
                    (vision.image_size // vision.patch_size) ** 2,
                    data.naflex_seq_lens,
                    data.naflex_token_budget,
                )
            except ValueError as error:
                raise ConfigError(f"data.{error}") from error
        if self.distills and data.local_crops < 1:
            raise ConfigError(f"data.local_crops={data.local_crops}: phase 2 needs at least one")
        if self.loss.gram_refresh_every < 0 or (self.loss.gram_refresh_max or 0) < 0:
            raise ConfigError(
                f"loss.gram_refresh_every={self.loss.gram_refresh_every} and "
                f"loss.gram_refresh_max={self.loss.gram_refresh_max} must be >= 0"
            )
        if not 0.0 <= self.loss.ema_momentum <= 1.0:
            raise ConfigError(f"loss.ema_momentum={self.loss.ema_momentum} must be in [0, 1]")
        if self.distributed.parallelism not in ("ddp", "fsdp"):
            raise ConfigError(
                f"distributed.parallelism={self.distributed.parallelism!r}: ddp or fsdp"
            )
        if self.distributed.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(
                f"distributed.precision={self.distributed.precision!r}: auto, bf16 or fp32"
            )
        return self


def from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, recursing into dataclass-typed fields."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = from_dict(kind, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, f"{where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """Accept YAML's int for a float field; reject clear type mismatches with the key's name."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None:
        if type(None) in options or kind is Any:
            return None
        raise ConfigError(f"{name} may not be null")
    for option in options:
        origin = typing.get_origin(option) or option
        if option is Any:
            return value
        if origin is float and not isinstance(value, bool):
            # YAML 1.1 reads `1e-3` (no dot) as a string; accept it for float fields.
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
        if origin is tuple and isinstance(value, list):  # YAML has no tuples
            return tuple(value)
        if isinstance(origin, type) and isinstance(value, origin):
            if origin is int and isinstance(value, bool):
                continue
            return value
    raise ConfigError(f"{name}={value!r} is not a {kind}")


def to_dict(args: Any) -> dict[str, Any]:
    return dataclasses.asdict(args)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested dict (values parsed as YAML)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not key=value")
        *parents, leaf = key.strip().split(".")
        node = values
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {parent} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return values


def preset_path(preset: str) -> Path:
    path = CONFIG_DIR / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no config preset {preset!r} (known: {', '.join(known)})")
    return path


def load_args(config: str | Path, overrides: list[str] = ()) -> TrainArgs:
    """Read a YAML config (a preset name or a path) and apply overrides (not yet resolved)."""
    path = Path(config) if str(config).endswith((".yaml", ".yml")) else preset_path(str(config))
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    return from_dict(TrainArgs, apply_overrides(values, list(overrides)))
