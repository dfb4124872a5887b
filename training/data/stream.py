"""An endless, exactly resumable stream of raw samples for one consumer.

The stream's position is three integers: the epoch, the index of the shard in this consumer's
order for that epoch, and the index of the next raw sample inside that shard. Every raw sample
advances the position, whether it is later kept, skipped as bad, or (when shards are split by
sample) left to another consumer, so a position saved in a checkpoint names exactly where the
stream continues, independently of how many workers decode ahead.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from training.data.shards import ConsumerPlan
from training.data.tars import RawSample, iter_tar_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamPosition:
    epoch: int = 0
    shard: int = 0
    sample: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, int]) -> StreamPosition:
        return cls(**state)


@dataclass
class StreamItem:
    sample: RawSample
    shard_url: str
    position: StreamPosition  # of this sample
    next_position: StreamPosition  # where the stream continues after it


class ShardReadError(RuntimeError):
    """No readable sample in a whole epoch of shards: the data, not one record, is broken."""


def iter_stream(plan: ConsumerPlan, start: StreamPosition) -> Iterator[StreamItem]:
    """Yield this consumer's samples forever, from `start`, epoch after epoch."""
    epoch, shard_index, skip = start.epoch, start.shard, start.sample
    while True:
        shards = plan.shards_for_epoch(epoch)
        reads_whole_epoch = shard_index == 0 and skip == 0
        yielded_this_epoch = False
        for index in range(shard_index, len(shards)):
            url = shards[index]
            sample_index = -1
            try:
                for sample_index, sample in enumerate(iter_tar_samples(url)):
                    if sample_index < skip or not plan.keeps_sample(sample_index):
                        continue
                    yielded_this_epoch = True
                    yield StreamItem(
                        sample,
                        url,
                        StreamPosition(epoch, index, sample_index),
                        StreamPosition(epoch, index, sample_index + 1),
                    )
            except (tarfile.TarError, EOFError, OSError) as error:
                # A broken shard loses only its unread remainder; the run goes on.
                log.error("shard %s unreadable after sample %d: %s", url, sample_index, error)
            skip = 0
        if reads_whole_epoch and not yielded_this_epoch:
            raise ShardReadError(
                f"no readable samples in any of {len(shards)} shards, e.g. {shards[0]}"
            )
        epoch, shard_index = epoch + 1, 0
