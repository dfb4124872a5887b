"""The data loader: mixed batches from worker processes, resumable to the exact sample.

Consumers are (rank, loader slot) pairs. Each torch DataLoader worker is one consumer that builds
whole batches from its own share of the shards. With `in_order` batching the DataLoader hands
batches out round-robin over workers, so after the main process has taken batch k it knows that
batch k+1 comes from slot (k+1) mod W. The loader state is each slot's stream positions plus the
slot that is due next; a resumed loader rotates worker ids so that slot comes first. Batches the
workers had prefetched but the trainer never took are simply built again after a resume.

Batch k is for training step k, so slot s builds the batches of steps s, s + W, s + 2W, ... and
its state records the next one: phase-3 (NaFlex) batches take their sequence length and batch
size from their step.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from training.data.batches import (
    GROUNDING_STREAM,
    STREAM_IDS,
    TEXT_STREAM,
    BatchShape,
    ConsumerState,
    SampleReader,
    assemble_batch,
)
from training.data.naflex import NaFlexSchedule
from training.data.samples import grounding_sample, image_text_sample
from training.data.shards import ConsumerPlan, expand_shard_urls
from training.data.stream import StreamPosition


@dataclass(frozen=True)
class PackedBatch:
    """A batch's tensors laid out in one contiguous byte buffer, for the trip from a worker
    process to the trainer. The DataLoader moves every tensor of a worker's result into a shared
    memory block of its own and passes its file descriptor across; with a dozen tensors per batch
    (image, text, nine LocCa target/mask tensors, ...) that cost the trainer ~5 ms per batch on
    CPU, against ~2.5 ms for two. Packed, a batch is one block; `unpack` returns views into it,
    no copies. `pin_memory` pins the one buffer (the DataLoader's pin thread calls it)."""

    layout: tuple[
        tuple[str, torch.dtype, tuple[int, ...], int, int], ...
    ]  # name, dtype, shape, offset, bytes
    buffer: torch.Tensor  # uint8

    ALIGN = 16  # every tensor starts at a multiple of this, so dtype views are aligned

    @classmethod
    def pack(cls, batch: dict[str, torch.Tensor]) -> PackedBatch:
        layout, offset = [], 0
        for name, tensor in batch.items():
            layout.append((name, tensor.dtype, tuple(tensor.shape), offset, tensor.nbytes))
            offset += -(-tensor.nbytes // cls.ALIGN) * cls.ALIGN
        buffer = torch.empty(offset, dtype=torch.uint8)
        for (_, _, _, start, size), tensor in zip(layout, batch.values()):
            buffer[start : start + size] = tensor.contiguous().reshape(-1).view(torch.uint8)
        return cls(tuple(layout), buffer)

    def unpack(self) -> dict[str, torch.Tensor]:
        return {
            name: self.buffer[start : start + size].view(dtype).view(shape)
            for name, dtype, shape, start, size in self.layout
        }

    def pin_memory(self) -> PackedBatch:
        return PackedBatch(self.layout, self.buffer.pin_memory())


@dataclass(frozen=True)
class LoaderSpec:
    text_shards: str | list[str]
    grounding_shards: str | list[str] | None
    shape: BatchShape
    seed: int
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    max_consecutive_bad: int = 1000
    naflex: NaFlexSchedule | None = None  # phase 3: NaFlex batches from its start step on
    # The steps whose batches carry shape.local_crops (the distilling steps); None: every step.
    crop_steps: range | None = None

    def shape_at(self, step: int) -> BatchShape:
        """The batch shape of a training step: `shape`, without local crops outside crop_steps,
        and in phase 3 NaFlex at the step's sequence length with the batch size its token
        budget allows (the grounding share kept, at least one grounding and one image-text
        sample when the base shape has grounding)."""
        base = self.shape
        if self.crop_steps is not None and step not in self.crop_steps:
            base = dataclasses.replace(base, local_crops=0)
        seq_len = self.naflex.seq_len(step) if self.naflex else None
        if seq_len is None:
            return base
        size = self.naflex.batch_size(seq_len, base.batch_size)
        grounding = base.grounding_per_batch
        if grounding:
            grounding = min(size - 1, max(1, round(size * grounding / base.batch_size)))
        return dataclasses.replace(
            base, batch_size=size, grounding_per_batch=grounding, naflex_seq_len=seq_len
        )


class MixedBatchDataset(IterableDataset):
    """Yields (batch, ConsumerState) forever; one instance per worker process after fork."""

    def __init__(
        self,
        spec: LoaderSpec,
        urls: dict[str, list[str]],
        tokenizer,
        states: list[ConsumerState],
        rotation: int,
    ):
        super().__init__()
        self.spec, self.urls, self.tokenizer = spec, urls, tokenizer
        self.states, self.rotation = states, rotation

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], ConsumerState]]:
        info = get_worker_info()
        workers = max(self.spec.num_workers, 1)
        slot = ((info.id if info else 0) + self.rotation) % workers
        consumer = self.spec.rank * workers + slot
        state = ConsumerState.from_dict(self.states[slot].to_dict())  # private copy per worker
        parsers = {TEXT_STREAM: image_text_sample, GROUNDING_STREAM: grounding_sample}
        readers = {
            name: SampleReader(
                name,
                ConsumerPlan(
                    tuple(urls),
                    consumer,
                    self.spec.world_size * workers,
                    self.spec.seed,
                    STREAM_IDS[name],
                ),
                parsers[name],
                state,
                self.spec.max_consecutive_bad,
            )
            for name, urls in self.urls.items()
        }
        while True:
            shape = self.spec.shape_at(state.step)
            counts = {
                TEXT_STREAM: shape.text_per_batch,
                GROUNDING_STREAM: shape.grounding_per_batch,
            }
            samples = [
                (name, sample, position)
                for name, reader in readers.items()
                for sample, position in reader.take(counts[name], shape.decode_min_side)
            ]
            batch = assemble_batch(samples, self.tokenizer, shape, self.spec.seed)
            state.step += workers
            # In a worker process, one shared-memory block per batch (see PackedBatch).
            yield (
                (PackedBatch.pack(batch) if info else batch),
                ConsumerState.from_dict(state.to_dict()),
            )


class ResumableLoader:
    """Iterate batches; `state_dict()` after any batch names exactly where the next one starts."""

    def __init__(self, spec: LoaderSpec, tokenizer, pin_memory: bool = False) -> None:
        self.spec, self.tokenizer, self.pin_memory = spec, tokenizer, pin_memory
        # Expanded now, so a wrong pattern fails at startup rather than at the first batch.
        self.urls = {TEXT_STREAM: expand_shard_urls(spec.text_shards)}
        if spec.shape.grounding_per_batch:
            if spec.grounding_shards is None:
                raise ValueError(
                    "grounding_per_batch > 0 needs grounding shards (data.grounding_shards)"
                )
            self.urls[GROUNDING_STREAM] = expand_shard_urls(spec.grounding_shards)
        self.workers = max(spec.num_workers, 1)
        self.states = [self._fresh_state(slot) for slot in range(self.workers)]
        self.next_slot = 0
        self._batches: Iterator | None = None

    @staticmethod
    def _fresh_state(slot: int) -> ConsumerState:
        return ConsumerState(
            slot, {TEXT_STREAM: StreamPosition(), GROUNDING_STREAM: StreamPosition()}, step=slot
        )

    def state_dict(self) -> dict:
        return {
            "num_workers": self.spec.num_workers,
            "next_slot": self.next_slot,
            "consumers": [state.to_dict() for state in self.states],
        }

    def load_state_dict(self, state: dict) -> None:
        if self._batches is not None:
            raise RuntimeError("load the loader state before iterating")
        if state["num_workers"] != self.spec.num_workers:
            raise ValueError(
                f"the checkpoint's data position was saved with data.num_workers="
                f"{state['num_workers']}; resume with the same value (now {self.spec.num_workers})"
            )
        self.states = [ConsumerState.from_dict(s) for s in state["consumers"]]
        self.next_slot = state["next_slot"]

    def continue_after(self, saved: list[dict], step: int) -> None:
        """Resume from loader states that another number of ranks or workers saved. Their
        stream positions do not map onto this layout's split of the shards, so every stream
        starts the epoch after the furthest one any saved consumer reached: no sample of the
        interrupted epoch is seen twice (its unread rest is skipped), and the batches are for
        the resumed step. Skipped-record counts carry over (to this rank 0's first slot)."""
        if self._batches is not None:
            raise RuntimeError("load the loader state before iterating")
        consumers = [ConsumerState.from_dict(c) for state in saved for c in state["consumers"]]
        epoch = {
            name: 1 + max(c.positions.get(name, StreamPosition()).epoch for c in consumers)
            for name in STREAM_IDS
        }
        self.states = [
            ConsumerState(
                slot,
                {name: StreamPosition(epoch[name]) for name in STREAM_IDS},
                sum((c.bad_samples for c in consumers), Counter())
                if slot == 0 and self.spec.rank == 0
                else Counter(),
                step=step + slot,
            )
            for slot in range(self.workers)
        ]
        self.next_slot = 0

    @property
    def bad_samples(self) -> Counter:
        return sum((state.bad_samples for state in self.states), Counter())

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._batches is None:
            self._batches = iter(self._make_dataloader())
        batch, consumer_state = next(self._batches)
        if isinstance(batch, PackedBatch):
            batch = batch.unpack()
        if consumer_state.slot != self.next_slot:
            raise RuntimeError(
                f"loader order broken: got slot {consumer_state.slot}, expected {self.next_slot}"
            )
        self.states[consumer_state.slot] = consumer_state
        self.next_slot = (consumer_state.slot + 1) % self.workers
        return batch

    def _make_dataloader(self) -> DataLoader:
        dataset = MixedBatchDataset(
            self.spec, self.urls, self.tokenizer, self.states, self.next_slot
        )
        return DataLoader(
            dataset,
            batch_size=None,  # workers build whole batches
            num_workers=self.spec.num_workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if self.spec.num_workers else None,
            # A private generator keeps worker seeding from drawing on the global torch RNG,
            # whose state the checkpoint restores for the model.
            generator=torch.Generator().manual_seed(self.spec.seed),
            in_order=True,
        )
