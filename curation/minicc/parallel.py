"""Order-preserving parallel map with a progress bar, for the build's CPU-bound steps."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")

# Below this many items a pool costs more than it saves.
MIN_ITEMS_FOR_POOL = 50


def ordered_map(
    function: Callable[[Item], Result], items: Sequence[Item], processes: int, description: str
) -> Iterator[Result]:
    """Yield function(item) for every item, in input order, using `processes` forked workers.

    Results never depend on scheduling, so a build is byte-identical for any worker count.
    """
    with tqdm(total=len(items), desc=description, unit="item", leave=False) as progress:
        if processes > 1 and len(items) >= MIN_ITEMS_FOR_POOL:
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                for result in pool.imap(function, items, chunksize=8):
                    progress.update()
                    yield result
        else:
            for item in items:
                progress.update()
                yield function(item)
