"""Shard lists and who reads which shard.

A shard spec is a brace pattern (`DIR/{00000..00009}.tar`), a glob (`s3://bucket/train/*.tar`), or
a list of either; every path is an fsspec URL. The trainer splits the shards of one stream among
all *consumers* (ranks × loader workers). Each epoch reshuffles the shard order with a seed derived
from (run seed, stream, epoch), so every consumer can compute its own plan without talking to the
others, and a resumed run recomputes exactly the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import braceexpand
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem


def expand_shard_urls(spec: str | list[str]) -> list[str]:
    """Expand brace ranges and globs into the list of shard URLs, in a stable (sorted) order.

    Raises FileNotFoundError when a pattern matches nothing or a named local shard is missing, so
    a typo fails at startup rather than as an empty stream hours later.
    """
    patterns = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for pattern in patterns:
        for url in braceexpand.braceexpand(pattern):
            fs, path = fsspec.core.url_to_fs(url)
            if any(ch in path for ch in "*?["):
                matches = sorted(fs.glob(path))
                if not matches:
                    raise FileNotFoundError(f"shard pattern {url!r} matches no files")
                urls.extend(fs.unstrip_protocol(m) if "://" in url else m for m in matches)
            else:
                if isinstance(fs, LocalFileSystem) and not fs.exists(path):
                    raise FileNotFoundError(f"shard {url!r} does not exist")
                urls.append(url)
    if not urls:
        raise FileNotFoundError(f"shard spec {spec!r} names no shards")
    return urls


@dataclass(frozen=True)
class ConsumerPlan:
    """Which part of a stream one consumer reads.

    With at least as many shards as consumers, each consumer reads whole shards (every
    `num_consumers`-th shard of the epoch's order). With fewer shards than consumers (a small
    grounding set, say) every consumer reads every shard and keeps every `num_consumers`-th
    sample, so no consumer is ever left without data.
    """

    urls: tuple[str, ...]
    consumer: int
    num_consumers: int
    seed: int
    stream_id: int

    @property
    def splits_samples(self) -> bool:
        return len(self.urls) < self.num_consumers

    def shards_for_epoch(self, epoch: int) -> list[str]:
        order = np.random.default_rng([self.seed, self.stream_id, epoch]).permutation(
            len(self.urls)
        )
        shuffled = [self.urls[i] for i in order]
        if self.splits_samples:
            return shuffled
        return shuffled[self.consumer :: self.num_consumers]

    def keeps_sample(self, sample_index: int) -> bool:
        if not self.splits_samples:
            return True
        return sample_index % self.num_consumers == self.consumer
