"""The shard tasks of the download stage: download a planned shard, download a group of planned
shards on one thread pool, and retry a shard's transient failures. Each shard commits
`{shard}.tar` + `{shard}.parquet` atomically through the runner's context, under the per-host
limits of the hosts the shard owns (see `plan` and `politeness`).

Why groups: a shard of the host plan often holds one host or a few, so its requests are capped
by their connection slots, and it cannot commit before its slowest URL answers. When one task
holds several such shards, their URLs share one `HostQueue`: every host of the group runs at once
within its slots, and while one host's stragglers run out their time the threads serve the other
hosts instead of idling. Each shard of a group is still run as the runner runs a task
(`runner.run_shard`): it commits its files and then its own done marker (or error record) as
soon as its own URLs are done, so resume, --retry-failed and the statistics see pool shards only.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from curation import fsio
from curation.download.fetcher import FetchConfig, Fetcher
from curation.download.host_queue import HostQueue
from curation.download.imaging import ImageOptions
from curation.download.plan import ShardSource, read_shard_rows
from curation.download.politeness import HostGate
from curation.download.reasons import SUCCESS, is_retryable_later
from curation.download.shard_download import (
    UNEXPECTED_ERROR,
    ShardDownloader,
    UrlOutcome,
    apply_outcome,
    host_of,
    retry_summary,
    shard_summary,
)
from curation.download.shard_writer import (
    JpegSpool,
    read_sidecar,
    spool_existing_images,
    write_pool_shard,
)
from curation.runner import ShardContext, ShardTask, marker_url, run_shard

STAGE = "download"
RETRY_STAGE = "download-retry"


_shared_fetchers: dict[FetchConfig, Fetcher] = {}
_shared_fetchers_lock = threading.Lock()


def shared_fetcher(config: FetchConfig) -> Fetcher:
    """One fetcher per worker process and configuration: its DNS and robots.txt caches outlive
    a shard, so a Ray worker running many shards asks each host for robots.txt once."""
    with _shared_fetchers_lock:
        if config not in _shared_fetchers:
            _shared_fetchers[config] = Fetcher(config)
        return _shared_fetchers[config]


def input_rows(shard_id: str, source: ShardSource) -> list[dict[str, Any]]:
    return [
        {
            "uid": record["uid"],
            "key": f"{shard_id}{index:04d}",
            "url": record["url"],
            "text": record["text"],
            "texts": list(record["texts"]),
            "lang": record.get("lang"),  # a plan made before lang was carried has none
        }
        for index, record in enumerate(read_shard_rows(source).to_pylist())
    ]


def host_parts(source: ShardSource) -> dict[str, int]:
    """How many sub-partitions each host of the shard was split into (1 for most)."""
    table = read_shard_rows(source).select(["host", "host_parts"]).to_pydict()
    return {host: parts for host, parts in zip(table["host"], table["host_parts"]) if parts > 1}


@dataclass(frozen=True)
class DownloadSettings:
    """What a shard task needs of the run's configuration."""

    fetch: FetchConfig
    image: ImageOptions
    threads: int


def download_rows(
    settings: DownloadSettings,
    rows: list[dict[str, Any]],
    spool: JpegSpool,
    ctx: ShardContext,
    gate: HostGate,
    queue: HostQueue,
) -> tuple[list[dict[str, Any]], dict[str, UrlOutcome], ShardDownloader]:
    """Download the rows' URLs (each once) on `queue`'s threads; returns the sidecar rows and the
    outcome per URL. The queue starts no more threads than its hosts have connection slots: a
    thread past them would only wait at a gate."""
    downloader = ShardDownloader(shared_fetcher(settings.fetch), settings.image, spool, gate)
    with ctx.stats.timer("download"):
        outcomes = downloader.download_all((row["url"] for row in rows), queue)
    for url, outcome in outcomes.items():
        if outcome.reason == UNEXPECTED_ERROR:
            ctx.stats.error(UNEXPECTED_ERROR, url, outcome.detail)
    return [apply_outcome(row, outcomes[row["url"]]) for row in rows], outcomes, downloader


def record_stats(
    ctx: ShardContext,
    rows: list[dict[str, Any]],
    outcomes: dict[str, UrlOutcome],
    downloader: ShardDownloader,
    threads: int,
    elapsed_s: float,
) -> None:
    summary = shard_summary(rows)
    ctx.stats.rows_in = summary["count"]
    ctx.stats.rows_out = summary["successes"]
    ctx.stats.bytes_in = summary["bytes"]
    for reason, count in summary["status_dict"].items():
        if reason != SUCCESS:
            ctx.stats.drop(reason, count)
    ctx.stats.extra.update(summary)
    ctx.stats.extra.update(retry_summary(outcomes.values()))
    ctx.stats.extra.update(
        {
            "threads": threads,  # of the task's queue (shared by the shards of a group)
            "duration": elapsed_s,
            "fetch_thread_seconds": downloader.times.fetch_s,
            "image_thread_seconds": downloader.times.image_s,
            "robots_txt_fetches_in_process": downloader.fetcher.robots.fetches,
            "dns_lookups_in_process": downloader.fetcher.dns.lookups,
        }
    )


@dataclass(frozen=True)
class DownloadShard:
    """A stage function: download one pool shard from its slice of the candidate rows."""

    settings: DownloadSettings
    sources: dict[str, ShardSource]

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        with HostQueue(self.settings.threads, host_of) as queue:
            self.download(task, ctx, queue)

    def download(self, task: ShardTask, ctx: ShardContext, queue: HostQueue) -> None:
        started, start_time = time.monotonic(), time.time()
        source = self.sources[task.shard_id]
        rows = input_rows(task.shard_id, source)
        gate = HostGate(self.settings.fetch.host_limits, host_parts(source))
        with JpegSpool() as spool:
            final, outcomes, downloader = download_rows(
                self.settings, rows, spool, ctx, gate, queue
            )
            write_pool_shard(
                ctx.open_output,
                task.shard_id,
                final,
                lambda row: spool.read(outcomes[row["url"]].spool_location),
                start_time,
            )
        record_stats(ctx, final, outcomes, downloader, queue.threads, time.monotonic() - started)


@dataclass(frozen=True)
class DownloadGroup:
    """The stage function of a download task that holds several pool shards (`members`, by task
    id): their URLs share one HostQueue of `settings.threads` threads, and each shard is run,
    committed and marked done as `runner.run_shard` does for a task of its own, under `stage`
    and the run's `seed`. Returns every shard's result in the task's `extra["shards"]`."""

    settings: DownloadSettings
    sources: dict[str, ShardSource]
    members: dict[str, tuple[str, ...]]
    stage: str
    seed: int

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        shard = DownloadShard(self.settings, self.sources)
        shard_ids = self.members[task.shard_id]
        with HostQueue(self.settings.threads, host_of) as queue:

            def download(shard_task: ShardTask, shard_ctx: ShardContext) -> None:
                shard.download(shard_task, shard_ctx, queue)

            def run_one(shard_id: str) -> dict[str, Any]:
                marker = marker_url(ctx.out_dir, self.stage, shard_id)
                if fsio.exists(marker):  # done before Ray retried a task whose worker died
                    return {"failed": False, **fsio.read_json(marker, expect=dict)}
                shard_task = ShardTask(shard_id, (self.sources[shard_id].plan_file,))
                return run_shard(self.stage, download, shard_task, ctx.out_dir, self.seed)

            with ThreadPoolExecutor(len(shard_ids), thread_name_prefix="shard") as shards:
                results = list(shards.map(run_one, shard_ids))
        ctx.stats.rows_in = sum(r.get("rows_in", 0) for r in results)
        ctx.stats.rows_out = sum(r.get("rows_out", 0) for r in results)
        ctx.stats.extra["shards"] = results


def needs_retry(row: dict[str, Any]) -> bool:
    return row["status"] != SUCCESS and is_retryable_later(row["error_message"] or "")


@dataclass(frozen=True)
class RetryFailedShard:
    """Re-fetch a finished shard's transiently failed rows and rewrite the shard atomically.

    Successes are carried over from the existing tar; only keys the sidecar marks as successes are
    trusted (a tar committed just before a crash may hold more), so a killed retry re-run is exact.
    """

    settings: DownloadSettings
    sources: dict[str, ShardSource]

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        started, start_time = time.monotonic(), time.time()
        pool = ctx.out_dir
        gate = HostGate(self.settings.fetch.host_limits, host_parts(self.sources[task.shard_id]))
        rows = read_sidecar(fsio.join(pool, f"{task.shard_id}.parquet"))
        retry = [row for row in rows if needs_retry(row)]
        kept = {row["key"] for row in rows if row["status"] == SUCCESS}
        with JpegSpool() as spool:
            existing = spool_existing_images(fsio.join(pool, f"{task.shard_id}.tar"), kept, spool)
            missing = kept - set(existing)
            if missing:
                raise ValueError(
                    f"{pool}/{task.shard_id}.tar lacks {len(missing)} sample(s) its sidecar "
                    f"lists, e.g. {min(missing)}; delete the shard and re-run"
                )
            with HostQueue(self.settings.threads, host_of) as queue:
                retried, outcomes, downloader = download_rows(
                    self.settings, retry, spool, ctx, gate, queue
                )
            by_key = {row["key"]: row for row in retried}
            final = [by_key.get(row["key"], row) for row in rows]

            def jpeg_of(row: dict[str, Any]) -> bytes:
                if row["key"] in existing:
                    return spool.read(existing[row["key"]])
                return spool.read(outcomes[row["url"]].spool_location)

            write_pool_shard(ctx.open_output, task.shard_id, final, jpeg_of, start_time)
        record_stats(ctx, final, outcomes, downloader, queue.threads, time.monotonic() - started)
        ctx.stats.extra["retried_rows"] = len(retry)
        ctx.stats.extra["recovered_rows"] = sum(row["status"] == SUCCESS for row in retried)
        marker = marker_url(pool, STAGE, task.shard_id)
        record = fsio.read_json(marker)
        record.update(
            {key: value for key, value in ctx.stats.to_record().items() if key != "timings"}
        )
        record["retried_at"] = time.time()
        fsio.write_json(marker, record)


def shards_with_retryable_rows(pool: str, shard_ids: list[str]) -> list[str]:
    found = []
    for shard_id in shard_ids:
        sidecar = fsio.join(pool, f"{shard_id}.parquet")
        if not fsio.exists(sidecar):
            continue
        table = fsio.read_parquet(sidecar, columns=["status", "error_message"]).to_pylist()
        if any(needs_retry(row) for row in table):
            found.append(shard_id)
    return found
