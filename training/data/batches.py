"""Mixed batches: a fixed number of image-text samples plus a fixed number of grounding samples.

Every batch a consumer builds takes exactly `batch_size - grounding_per_batch` samples from the
image-text stream and `grounding_per_batch` from the grounding stream, so the grounding share is
the same on every rank and every step. Grounding rows come last and are marked
`contrastive=False`; the loss masks them, so shapes stay static.

A `ConsumerState` (the position of each stream plus bad-sample counters) travels with every batch,
which is what makes the loader resumable exactly.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from training.data.crops import crop_source_side, random_resized_crops
from training.data.naflex import naflex_batch
from training.data.samples import BadSample, Sample, square_image
from training.data.shards import ConsumerPlan
from training.data.stream import StreamItem, StreamPosition, iter_stream
from training.locca_targets import collate_locca, make_locca_example

log = logging.getLogger(__name__)

TEXT_STREAM, GROUNDING_STREAM = "text", "grounding"
STREAM_IDS = {TEXT_STREAM: 0, GROUNDING_STREAM: 1}


@dataclass(frozen=True)
class BatchShape:
    batch_size: int  # per rank
    grounding_per_batch: int
    image_size: int
    context_length: int
    locca_max_len: int
    local_crops: int = 0  # phase-2 SILC views per sample (0: the batch has no "local_crops")
    local_crop_size: int = 0
    # Phase 3: NaFlex patches padded to this length instead of square images (0: square).
    naflex_seq_len: int = 0
    patch_size: int = 0

    @property
    def text_per_batch(self) -> int:
        return self.batch_size - self.grounding_per_batch

    @property
    def decode_min_side(self) -> int:
        """Both sides the decoder keeps (when the source has them): the square input's, or a
        NaFlex grid's shorter side (at most sqrt(L) patches), and enough for local crops cut
        from the original resolution."""
        crops = crop_source_side(self.local_crop_size) if self.local_crops else 0
        if self.naflex_seq_len:
            return max(self.patch_size * math.isqrt(self.naflex_seq_len), crops)
        return max(self.image_size, crops)


@dataclass
class ConsumerState:
    """Where one consumer's streams continue, the training step its next batch is for, and what
    it has skipped so far."""

    slot: int
    positions: dict[str, StreamPosition]
    bad_samples: Counter = field(default_factory=Counter)
    step: int = 0

    def to_dict(self) -> dict:
        return {
            "slot": self.slot,
            "step": self.step,
            "positions": {name: pos.to_dict() for name, pos in self.positions.items()},
            "bad_samples": dict(self.bad_samples),
        }

    @classmethod
    def from_dict(cls, state: dict) -> ConsumerState:
        positions = {name: StreamPosition.from_dict(p) for name, p in state["positions"].items()}
        # States saved before the step was recorded resume as if the run had just started.
        return cls(
            state["slot"],
            positions,
            Counter(state.get("bad_samples", {})),
            state.get("step", state["slot"]),
        )


class SampleReader:
    """Pulls parsed samples from one stream, skipping (and counting) bad records."""

    def __init__(
        self,
        name: str,
        plan: ConsumerPlan,
        parse: Callable[..., Sample],
        state: ConsumerState,
        max_consecutive_bad: int,
    ) -> None:
        self.name, self.parse, self.state = name, parse, state
        self.max_consecutive_bad = max_consecutive_bad
        self.items: Iterator[StreamItem] = iter_stream(plan, state.positions[name])

    def take(self, count: int, min_side: int) -> list[tuple[Sample, StreamPosition]]:
        """`count` good samples, decoded keeping both image sides >= min_side."""
        taken: list[tuple[Sample, StreamPosition]] = []
        consecutive_bad = 0
        while len(taken) < count:
            item = next(self.items)
            self.state.positions[self.name] = item.next_position
            try:
                taken.append((self.parse(item.sample, min_side), item.position))
                consecutive_bad = 0
            except BadSample as bad:
                self.state.bad_samples[f"{self.name}/{bad.reason}"] += 1
                log.warning(
                    "skipping %s sample %s in %s: %s",
                    self.name,
                    item.sample.key,
                    item.shard_url,
                    bad,
                )
                consecutive_bad += 1
                if consecutive_bad >= self.max_consecutive_bad:
                    raise RuntimeError(
                        f"{consecutive_bad} bad {self.name} samples in a row (last: "
                        f"{item.shard_url} {item.sample.key}: {bad}); is this the right data?"
                    ) from bad
        return taken


def locca_rng(seed: int, stream: str, position: StreamPosition) -> random.Random:
    """Target sampling depends only on the sample's identity, so it survives resumes and workers."""
    return random.Random(f"{seed}/{stream}/{position.epoch}/{position.shard}/{position.sample}")


def crops_rng(seed: int, stream: str, position: StreamPosition) -> random.Random:
    """Local-crop boxes, like locca_rng tied to the sample's identity, on a separate sequence."""
    return locca_rng(seed, f"{stream}/local_crops", position)


def assemble_batch(
    samples: list[tuple[str, Sample, StreamPosition]],
    tokenizer,
    shape: BatchShape,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Resize and stack images (square, or NaFlex patches when shape.naflex_seq_len is set),
    tokenize captions, and build the LocCa targets of one batch."""
    images = [sample.image for _, sample, _ in samples]
    # Grounding rows have no caption; their text slot is padding the contrastive mask ignores.
    captions = [sample.caption or "" for _, sample, _ in samples]
    examples = [
        make_locca_example(
            tokenizer,
            sample.caption,
            sample.refs,
            locca_rng(seed, stream, pos),
            max_len=shape.locca_max_len,
        )
        for stream, sample, pos in samples
    ]
    if shape.naflex_seq_len:
        batch = naflex_batch(images, shape.patch_size, shape.naflex_seq_len)
    else:
        batch = {"image": torch.stack([square_image(image, shape.image_size) for image in images])}
    batch.update(
        {
            "text": tokenizer.encode(captions, context_length=shape.context_length),
            "contrastive": torch.tensor([sample.contrastive for _, sample, _ in samples]),
        }
    )
    batch.update(collate_locca(examples, shape.locca_max_len))
    if shape.local_crops:
        batch["local_crops"] = torch.stack(
            [
                random_resized_crops(
                    sample.image,
                    shape.local_crops,
                    shape.local_crop_size,
                    crops_rng(seed, stream, pos),
                )
                for stream, sample, pos in samples
            ]
        )
    return batch
