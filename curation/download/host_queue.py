"""One pool of download threads for the URLs of one or more shards, handed out host by host.

Taking a shard's URLs in plan order (sorted by host) wastes the threads twice: once a host's
connection slots are full, the next thread waits at that host's gate although another host has
free slots; and once a host's URLs are all in flight, its slow stragglers keep the shard open while
the other threads have nothing left to do. Here every (gate, host) has its own queue and a free
thread takes the next URL of the next host, round-robin, among the hosts that have a free
connection slot. So every host of every shard the pool serves starts at once within its slots,
and while one host's stragglers run out their time, the threads keep the other hosts (and the
other shards of the task) busy.

The gate (`politeness.HostGate`) still admits each request: the queue only avoids sending a thread
to a host whose slots are taken. A redirect to another host waits at that host's gate as before.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from curation.download.politeness import HostGate

Key = tuple[HostGate, str]


@dataclass
class _Batch:
    """One `map` call: its results, in the order of its URLs, and how many are still out."""

    fn: Callable[[str], Any]
    results: list[Any]
    remaining: int
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class HostQueue:
    """Thread-safe; use as a context manager, which stops the threads on exit.

    `max_threads` caps the threads; fewer are started when the hosts queued so far have fewer
    connection slots in all (a thread past them could only wait at a gate)."""

    def __init__(self, max_threads: int, host_of: Callable[[str], str | None]):
        if max_threads < 1:
            raise ValueError(f"a host queue needs at least one thread, got {max_threads}")
        self.max_threads = max_threads
        self._host_of = host_of
        self._cond = threading.Condition()
        self._queues: dict[Key, deque[tuple[_Batch, int, str]]] = {}
        self._slots: dict[Key, int] = {}
        self._active: Counter = Counter()
        self._ready: deque[Key] = deque()  # keys with queued URLs and a free slot, in turn order
        self._is_ready: set[Key] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads started so far (they run until the queue is closed)."""
        return len(self._threads)

    def map(self, fn: Callable[[str], Any], urls: Sequence[str], gate: HostGate) -> list[Any]:
        """`fn(url)` for every URL, on the pool's threads under `gate`'s connection slots; blocks
        until all are done and returns the results in `urls` order. Several threads may call it
        at once (one per shard of a task): their URLs share the threads."""
        batch = _Batch(fn, [None] * len(urls), len(urls))
        if not urls:
            return []
        with self._cond:
            if self._closed:
                raise RuntimeError("the host queue is closed")
            for index, url in enumerate(urls):
                key = (gate, self._host_of(url) or "")
                if key not in self._queues:
                    self._queues[key] = deque()
                    self._slots[key] = gate.connections_for(key[1])
                self._queues[key].append((batch, index, url))
                self._mark_ready(key)
            wanted = min(
                self.max_threads,
                sum(slots for key, slots in self._slots.items() if self._queues[key]),
            )
            while len(self._threads) < wanted:
                thread = threading.Thread(
                    target=self._work, name=f"download-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()
        batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results

    def _mark_ready(self, key: Key) -> None:
        """Put `key` in line if it has queued URLs, a free slot and is not in line yet."""
        if key not in self._is_ready and self._queues[key] and self._active[key] < self._slots[key]:
            self._ready.append(key)
            self._is_ready.add(key)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._closed:
                    self._cond.wait()
                if not self._ready:
                    return  # closed: every map() has returned, so nothing is queued
                key = self._ready.popleft()
                self._is_ready.discard(key)
                batch, index, url = self._queues[key].popleft()
                self._active[key] += 1
                self._mark_ready(key)  # back in line behind the other hosts if it has a slot
                if self._ready:
                    self._cond.notify()  # the wake-up this thread took may have been for them
            try:
                batch.results[index] = batch.fn(url)
            except BaseException as exc:  # noqa: BLE001 - handed to the map() caller
                batch.error = exc
            with self._cond:
                self._active[key] -= 1
                self._mark_ready(key)
                if self._ready:
                    self._cond.notify()
                batch.remaining -= 1
                if batch.remaining == 0:
                    batch.done.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
