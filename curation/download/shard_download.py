"""Download the URLs of one pool shard on a pool of worker threads (`host_queue.HostQueue`, which
may serve several shards of one task at once).

Threads, not asyncio: the work per image is a fetch (sockets release the GIL) followed by a
decode, resize and encode (Pillow releases the GIL in its C loops), so threads overlap both kinds
of work with a plain blocking client; an event loop would still need a thread or process pool for
the CPU half. Each distinct URL is fetched once even if the shard lists it twice.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from curation.download.fetcher import Fetcher
from curation.download.host_queue import HostQueue
from curation.download.imaging import ImageOptions, process_image
from curation.download.politeness import HostGate
from curation.download.reasons import (
    FAILED_TO_DOWNLOAD,
    FAILED_TO_RESIZE,
    SUCCESS,
    DownloadFailure,
    is_refusal,
    status_of,
)
from curation.download.shard_writer import JpegSpool, exif_json, shard_counts

UNEXPECTED_ERROR = "unexpected_error"


@dataclass
class UrlOutcome:
    status: str
    reason: str | None = None
    detail: str = ""
    host: str | None = None
    download_bytes: int = 0
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    sha256: str | None = None
    spool_location: tuple[int, int] | None = None
    retried_reasons: list[str] = field(default_factory=list)
    redirects: int = 0
    exif: str | None = None


@dataclass
class WorkTimes:
    """Seconds spent by all threads together in each phase (summed under a lock)."""

    fetch_s: float = 0.0
    image_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fetch_s: float, image_s: float) -> None:
        with self.lock:
            self.fetch_s += fetch_s
            self.image_s += image_s


def host_of(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


class ShardDownloader:
    def __init__(
        self,
        fetcher: Fetcher,
        image_options: ImageOptions,
        spool: JpegSpool,
        gate: HostGate | None = None,
    ):
        self.fetcher = fetcher
        self.gate = gate or fetcher.gate
        self.image_options = image_options
        self.spool = spool
        self.times = WorkTimes()

    def download_url(self, url: str) -> UrlOutcome:
        """Fetch, check and resize one URL; every failure becomes an outcome, never an exception."""
        host = host_of(url)
        started = time.perf_counter()
        try:
            fetched = self.fetcher.fetch(url, self.gate)
        except DownloadFailure as failure:
            self.times.add(time.perf_counter() - started, 0.0)
            return UrlOutcome(
                status_of(failure.reason),
                failure.reason,
                failure.detail,
                host,
                retried_reasons=failure.retried_reasons,
            )
        except Exception as exc:  # noqa: BLE001 - one odd URL must not end the shard
            return UrlOutcome(
                FAILED_TO_DOWNLOAD, UNEXPECTED_ERROR, f"{type(exc).__name__}: {exc}", host
            )
        fetched_at = time.perf_counter()
        try:
            image = process_image(fetched.body, self.image_options)
        except DownloadFailure as failure:
            self.times.add(fetched_at - started, time.perf_counter() - fetched_at)
            return UrlOutcome(
                status_of(failure.reason, decoding=True),
                failure.reason,
                failure.detail,
                host,
                len(fetched.body),
                retried_reasons=fetched.retried_reasons,
                redirects=fetched.redirects,
            )
        except Exception as exc:  # noqa: BLE001
            return UrlOutcome(
                FAILED_TO_RESIZE,
                UNEXPECTED_ERROR,
                f"{type(exc).__name__}: {exc}",
                host,
                len(fetched.body),
            )
        self.times.add(fetched_at - started, time.perf_counter() - fetched_at)
        return UrlOutcome(
            SUCCESS,
            None,
            "",
            host,
            len(fetched.body),
            image.width,
            image.height,
            image.original_width,
            image.original_height,
            image.sha256,
            self.spool.add(image.jpeg),
            fetched.retried_reasons,
            fetched.redirects,
            exif_json(fetched.body),
        )

    def download_all(self, urls: Iterable[str], queue: HostQueue) -> dict[str, UrlOutcome]:
        """Each distinct URL once, on `queue`'s threads under this shard's gate."""
        unique = list(dict.fromkeys(urls))
        return dict(zip(unique, queue.map(self.download_url, unique, self.gate)))


def apply_outcome(row: dict[str, Any], outcome: UrlOutcome) -> dict[str, Any]:
    """The sidecar row of an input row given what happened to its URL."""
    return {
        **row,
        "status": outcome.status,
        "error_message": outcome.reason,
        "host": outcome.host,
        "width": outcome.width,
        "height": outcome.height,
        "original_width": outcome.original_width,
        "original_height": outcome.original_height,
        "sha256": outcome.sha256,
        "exif": outcome.exif,
        "download_bytes": outcome.download_bytes,
    }


def retry_summary(outcomes: Iterable[UrlOutcome]) -> dict[str, Any]:
    """Transient failures met on the way (and whether they were overcome), and redirects followed."""
    retried: Counter = Counter()
    recovered: Counter = Counter()
    redirected = 0
    for outcome in outcomes:
        retried.update(outcome.retried_reasons)
        if outcome.status == SUCCESS:
            recovered.update(set(outcome.retried_reasons))
            redirected += outcome.redirects > 0
    return {
        "retried": dict(sorted(retried.items())),
        "recovered_after_retry": dict(sorted(recovered.items())),
        "redirected_successes": redirected,
    }


def shard_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """img2dataset's _stats.json fields (count, successes, failed_to_*, status_dict) plus ours."""
    hosts: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = hosts.setdefault(row["host"] or "(none)", {"count": 0, "successes": 0, "bytes": 0})
        entry["count"] += 1
        entry["successes"] += row["status"] == SUCCESS
        entry["bytes"] += row["download_bytes"] or 0
    return {
        **shard_counts(rows),
        # Declined URLs (counted in failed_to_download, as img2dataset has no such status).
        "refused": sum(is_refusal(row["error_message"]) for row in rows),
        "bytes": sum(row["download_bytes"] or 0 for row in rows),
        "hosts": dict(sorted(hosts.items())),
    }
