"""Sizes of the mini web at each scale, and the simulated hosts."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 8719
HOST_COUNT = 8
HOSTS: tuple[str, ...] = tuple(f"127.0.0.{i}" for i in range(2, 2 + HOST_COUNT))
# The downloader's allow-list: covers every simulated host, not the forbidden address.
ALLOWED_CIDR = "127.0.0.0/28"
# Stands in for an internal address a safe downloader must refuse; a listener records any request.
FORBIDDEN_ADDRESSES: tuple[str, ...] = ("127.0.0.250",)


@dataclass(frozen=True)
class Scale:
    name: str
    scenes: int  # distinct pictures' scenes on the web
    pages: int
    images_per_page: tuple[int, int]  # inclusive range of <img> tags per page
    urls_per_fault: int  # image URLs planted per fault kind
    pages_per_warc: int
    # images in each held-out evaluation set; small and up: one standard error of an accuracy
    # near 50% is sqrt(0.25 / n) <= 1.5 points from n = 1,112
    eval_per_set: int
    contaminants: int  # evaluation images planted into the web
    grounding_shard_size: int


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        "tiny",
        scenes=80,
        pages=160,
        images_per_page=(3, 10),
        urls_per_fault=2,
        pages_per_warc=40,
        eval_per_set=24,
        contaminants=3,
        grounding_shard_size=1000,
    ),
    "small": Scale(
        "small",
        scenes=2400,
        pages=2800,
        images_per_page=(3, 12),
        urls_per_fault=12,
        pages_per_warc=350,
        eval_per_set=1200,
        contaminants=20,
        grounding_shard_size=1000,
    ),
    "medium": Scale(
        "medium",
        scenes=24000,
        pages=28000,
        images_per_page=(3, 12),
        urls_per_fault=100,
        pages_per_warc=1000,
        eval_per_set=2000,
        contaminants=100,
        grounding_shard_size=5000,
    ),
}


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; choose one of {sorted(SCALES)}") from None
