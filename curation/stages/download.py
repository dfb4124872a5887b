"""`python -m curation download`: deduplicated candidates -> the image pool.

Pool shard k holds input rows [k*N, (k+1)*N) of the sorted candidate files (see
curation.download.plan); each shard is a Ray task that downloads its URLs on a thread pool and
commits `{shard}.tar` + `{shard}.parquet` atomically, then its stats marker, so a killed run
re-run redoes only unfinished shards. `--retry-failed` then re-fetches the rows whose failure
may be transient (timeouts, 429, 5xx, dropped connections) and rewrites those shards atomically.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from curation import fsio
from curation.download.address_policy import parse_networks
from curation.download.fetcher import FetchConfig, Fetcher
from curation.download.http_exchange import Timeouts
from curation.download.imaging import RESIZE_MODES, ImageOptions
from curation.download.plan import (
    DownloadPlan,
    InputSlice,
    load_plan,
    make_plan,
    read_slice,
    save_or_check_plan,
)
from curation.download.reasons import SUCCESS, is_retryable_later
from curation.download.shard_download import (
    UNEXPECTED_ERROR,
    ShardDownloader,
    UrlOutcome,
    apply_outcome,
    retry_summary,
    shard_summary,
)
from curation.download.shard_writer import (
    JpegSpool,
    read_sidecar,
    spool_existing_images,
    write_pool_shard,
)
from curation.runner import ShardContext, ShardTask, StageReport, marker_url, run_stage
from curation.stats import stats_dir

STAGE = "download"
RETRY_STAGE = "download-retry"


@dataclass(frozen=True)
class DownloadConfig:
    fetch: FetchConfig = field(default_factory=FetchConfig)
    image: ImageOptions = field(default_factory=ImageOptions)
    threads: int = 64


_shared_fetchers: dict[FetchConfig, Fetcher] = {}
_shared_fetchers_lock = threading.Lock()


def shared_fetcher(config: FetchConfig) -> Fetcher:
    """One fetcher per worker process and configuration: its DNS and robots.txt caches outlive
    a shard, so a Ray worker running many shards asks each host for robots.txt once."""
    with _shared_fetchers_lock:
        if config not in _shared_fetchers:
            _shared_fetchers[config] = Fetcher(config)
        return _shared_fetchers[config]


def input_rows(shard_id: str, slices: tuple[InputSlice, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for piece in slices:
        for record in read_slice(piece).to_pylist():
            texts = record.get("texts")
            rows.append(
                {
                    "uid": record["uid"],
                    "key": f"{shard_id}{len(rows):04d}",
                    "url": record["url"],
                    "text": record["text"],
                    "texts": list(texts) if texts else [record["text"]],
                }
            )
    return rows


def download_rows(
    config: DownloadConfig, rows: list[dict[str, Any]], spool: JpegSpool, ctx: ShardContext
) -> tuple[list[dict[str, Any]], dict[str, UrlOutcome], ShardDownloader]:
    """Download the rows' URLs (each once); returns the sidecar rows and the outcome per URL."""
    downloader = ShardDownloader(shared_fetcher(config.fetch), config.image, config.threads, spool)
    with ctx.stats.timer("download"):
        outcomes = downloader.download_all(row["url"] for row in rows)
    for url, outcome in outcomes.items():
        if outcome.reason == UNEXPECTED_ERROR:
            ctx.stats.error(UNEXPECTED_ERROR, url, outcome.detail)
    return [apply_outcome(row, outcomes[row["url"]]) for row in rows], outcomes, downloader


def record_stats(
    ctx: ShardContext,
    rows: list[dict[str, Any]],
    outcomes: dict[str, UrlOutcome],
    downloader: ShardDownloader,
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
            "threads": downloader.threads,
            "duration": elapsed_s,
            "fetch_thread_seconds": downloader.times.fetch_s,
            "image_thread_seconds": downloader.times.image_s,
            "robots_txt_fetches_in_process": downloader.fetcher.robots.fetches,
            "dns_lookups_in_process": downloader.fetcher.dns.lookups,
        }
    )


@dataclass(frozen=True)
class DownloadShard:
    """The stage function: download one pool shard from its slice of the candidate rows."""

    config: DownloadConfig
    slices: dict[str, tuple[InputSlice, ...]]

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        started, start_time = time.monotonic(), time.time()
        rows = input_rows(task.shard_id, self.slices[task.shard_id])
        with JpegSpool() as spool:
            final, outcomes, downloader = download_rows(self.config, rows, spool, ctx)
            write_pool_shard(
                ctx.open_output,
                task.shard_id,
                final,
                lambda row: spool.read(outcomes[row["url"]].spool_location),
                start_time,
            )
        record_stats(ctx, final, outcomes, downloader, time.monotonic() - started)


def needs_retry(row: dict[str, Any]) -> bool:
    return row["status"] != SUCCESS and is_retryable_later(row["error_message"] or "")


@dataclass(frozen=True)
class RetryFailedShard:
    """Re-fetch a finished shard's transiently failed rows and rewrite the shard atomically.

    Successes are carried over from the existing tar; only keys the sidecar marks as successes are
    trusted (a tar committed just before a crash may hold more), so a killed retry re-run is exact.
    """

    config: DownloadConfig

    def __call__(self, task: ShardTask, ctx: ShardContext) -> None:
        started, start_time = time.monotonic(), time.time()
        pool = ctx.out_dir
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
            retried, outcomes, downloader = download_rows(self.config, retry, spool, ctx)
            by_key = {row["key"]: row for row in retried}
            final = [by_key.get(row["key"], row) for row in rows]

            def jpeg_of(row: dict[str, Any]) -> bytes:
                if row["key"] in existing:
                    return spool.read(existing[row["key"]])
                return spool.read(outcomes[row["url"]].spool_location)

            write_pool_shard(ctx.open_output, task.shard_id, final, jpeg_of, start_time)
        record_stats(ctx, final, outcomes, downloader, time.monotonic() - started)
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
    import pyarrow.parquet as pq

    found = []
    for shard_id in shard_ids:
        sidecar = fsio.join(pool, f"{shard_id}.parquet")
        if not fsio.exists(sidecar):
            continue
        fs, path = fsio.filesystem(sidecar)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle, columns=["status", "error_message"]).to_pylist()
        if any(needs_retry(row) for row in table):
            found.append(shard_id)
    return found


def download_pool(
    inputs: list[str] | None,
    pool: str,
    config: DownloadConfig,
    *,
    samples_per_shard: int = 10_000,
    retry_failed: bool = False,
    seed: int = 0,
    use_ray: bool = True,
    max_in_flight: int | None = None,
    progress: bool = True,
) -> list[StageReport]:
    """Download every unfinished shard of the pool, then (optionally) retry transient failures."""
    fsio.makedirs(pool)
    if inputs:
        plan: DownloadPlan | None = make_plan(inputs, samples_per_shard)
        save_or_check_plan(pool, plan)
    else:
        plan = load_plan(pool)
        if plan is None:
            raise ValueError(f"{pool} has no download plan yet: give --input")
    slices = plan.shards()
    tasks = [
        ShardTask(shard_id, tuple(dict.fromkeys(piece.url for piece in pieces)))
        for shard_id, pieces in slices.items()
    ]
    reports = [
        run_stage(
            STAGE,
            DownloadShard(config, slices),
            tasks,
            pool,
            seed=seed,
            use_ray=use_ray,
            max_in_flight=max_in_flight,
            progress=progress,
        )
    ]
    if retry_failed:
        # Each --retry-failed invocation looks at the sidecars afresh, so its markers are per call.
        fs, path = fsio.filesystem(stats_dir(pool, RETRY_STAGE))
        if fs.exists(path):
            fs.rm(path, recursive=True)
        retry_ids = shards_with_retryable_rows(pool, list(slices))
        retry_tasks = [task for task in tasks if task.shard_id in retry_ids]
        reports.append(
            run_stage(
                RETRY_STAGE,
                RetryFailedShard(config),
                retry_tasks,
                pool,
                seed=seed,
                use_ray=use_ray,
                max_in_flight=max_in_flight,
                progress=progress,
            )
        )
    return reports


def config_from_args(args: argparse.Namespace) -> DownloadConfig:
    fetch = FetchConfig(
        user_agent_token=args.user_agent_token,
        allow_networks=tuple(args.allow_network or ()),
        timeouts=Timeouts(args.connect_timeout, args.read_timeout, args.total_timeout),
        max_bytes=args.max_bytes,
        retries=args.retries,
        per_host_connections=args.per_host_connections,
        respect_robots_txt=not args.ignore_robots_txt,
    )
    parse_networks(fetch.allow_networks)  # a malformed CIDR fails here, not in every worker
    image = ImageOptions(
        image_size=args.image_size,
        resize_mode=args.resize_mode,
        max_pixels=args.max_pixels,
        jpeg_quality=args.jpeg_quality,
    )
    return DownloadConfig(fetch, image, args.threads)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        reports = download_pool(
            args.input,
            args.out,
            config,
            samples_per_shard=args.samples_per_shard,
            retry_failed=args.retry_failed,
            seed=args.seed,
            use_ray=not args.no_ray,
        )
    except ValueError as exc:
        print(f"download: {exc}")
        return 2
    for report in reports:
        print(report.describe())
    return 0 if all(report.ok for report in reports) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download candidate images into the pool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input",
        nargs="+",
        help="deduplicated candidate Parquet: folders, files or globs "
        "(optional with --retry-failed on an existing pool)",
    )
    parser.add_argument("--out", required=True, help="pool folder (fsspec URL)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--resize-mode", choices=RESIZE_MODES, default="keep_ratio_largest")
    parser.add_argument("--samples-per-shard", type=int, default=10_000)
    parser.add_argument(
        "--allow-network",
        action="extend",
        nargs="+",
        metavar="CIDR",
        help="non-public networks we may fetch from (e.g. the mini web's 127.0.0.0/24)",
    )
    parser.add_argument(
        "--user-agent-token", default="openvision", help="our name in robots.txt and X-Robots-Tag"
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="re-fetch rows that failed transiently in finished shards",
    )
    parser.add_argument("--threads", type=int, default=64, help="download threads per shard task")
    parser.add_argument("--per-host-connections", type=int, default=16)
    parser.add_argument(
        "--retries", type=int, default=2, help="immediate retries of transient failures"
    )
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--read-timeout", type=float, default=10.0)
    parser.add_argument("--total-timeout", type=float, default=30.0)
    parser.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024, help="per image")
    parser.add_argument("--max-pixels", type=int, default=80_000_000, help="decoded pixel cap")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument(
        "--ignore-robots-txt",
        action="store_true",
        help="only for sources you own; X-Robots-Tag is still honoured",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-ray", action="store_true", help="run shards one by one in this process"
    )
    parser.set_defaults(func=run)
