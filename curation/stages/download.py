"""`python -m curation download`: deduplicated candidates -> the image pool.

    python -m curation download --input RUN/dedup --out RUN/pool [--samples-per-shard 10000]
        [--per-host-connections 16] [--per-host-rate R] [--retry-failed] ...

Planning (curation.download.plan) puts every URL of a host into one pool shard, and splits a
giant host (more URLs than --samples-per-shard) into k = ceil(urls / samples_per_shard)
sub-partitions in k shards, each with 1/k of the host's limits; so --per-host-connections,
--per-host-rate and the host's robots.txt Crawl-delay hold for the whole cluster, not per
process. A download task takes one pool shard, or several consecutive ones when their hosts have
few connection slots (up to --shards-per-task): their URLs share the task's --threads, every host
at once within its slots. Each pool shard commits `{shard}.tar` + `{shard}.parquet` atomically,
then its stats marker, as soon as its own URLs are done, so a killed run re-run redoes only
unfinished shards. An unreadable input file is reported in `_errors/download_partition/` and
the rest is downloaded. `--retry-failed` then re-fetches the rows whose failure may be transient
(timeouts, 429, 5xx, dropped connections) and rewrites those shards atomically.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from curation import fsio
from curation.download.address_policy import parse_networks
from curation.download.fetcher import FetchConfig
from curation.download.http_exchange import Timeouts
from curation.download.imaging import RESIZE_MODES, ImageOptions
from curation.download.plan import (
    DEFAULT_PLAN_BUCKETS,
    MAX_SAMPLES_PER_SHARD,
    PARTITION_STAGE,
    PLAN_DIR,
    PLAN_STAGE,
    PartitionByHost,
    PlanSettings,
    PlanShards,
    ShardSource,
    bucket_tasks,
    input_files,
    load_plan,
    numbered_shards,
    partition_tasks,
    save_or_check_plan,
)
from curation.download.shard_tasks import (
    RETRY_STAGE,
    STAGE,
    DownloadGroup,
    DownloadSettings,
    RetryFailedShard,
    shards_with_retryable_rows,
)
from curation.runner import (
    ShardTask,
    StageReport,
    completed_shards,
    error_url,
    marker_url,
    run_stage,
)
from curation.stages.common import ConfigError, RunOptions, add_run_options, cli_main
from curation.stats import stats_dir

PLANNED_INPUTS = "readable_inputs.json"  # under PLAN_DIR
TASK_STAGE = "download_task"  # the runner's records of this call's tasks (groups of shards)
DEFAULT_SHARDS_PER_TASK = 4


@dataclass(frozen=True)
class DownloadConfig:
    """Inputs, pool folder and settings of one download run (paths are fsspec URLs)."""

    out: str
    inputs: tuple[str, ...] = ()  # candidate Parquet folders/files/globs; () = the pool's plan
    fetch: FetchConfig = field(default_factory=FetchConfig)
    image: ImageOptions = field(default_factory=ImageOptions)
    threads: int = 64
    samples_per_shard: int = 10_000
    plan_buckets: int = DEFAULT_PLAN_BUCKETS
    retry_failed: bool = False
    max_in_flight: int | None = None  # shard tasks at once (None: as many as Ray has CPUs)
    shards_per_task: int = DEFAULT_SHARDS_PER_TASK  # most pool shards one download task holds

    def __post_init__(self) -> None:
        if not 1 <= self.samples_per_shard <= MAX_SAMPLES_PER_SHARD:
            raise ConfigError(
                f"--samples-per-shard must be in 1..{MAX_SAMPLES_PER_SHARD}, "
                f"got {self.samples_per_shard}"
            )
        if self.plan_buckets < 1 or self.threads < 1 or self.shards_per_task < 1:
            raise ConfigError("--plan-buckets, --threads and --shards-per-task must be at least 1")
        try:
            self.fetch.host_limits  # noqa: B018 - validates the per-host limits
            parse_networks(self.fetch.allow_networks)  # a bad CIDR fails here, not in workers
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


# A download task mostly waits on the network, and cannot commit a shard before the shard's slowest
# URL answers. Two tasks per CPU let one task's stragglers overlap another's downloads. Politeness
# is unchanged: concurrent tasks never share a host (a giant host's k sub-partitions each hold 1/k
# of its limits).
DOWNLOAD_TASK_CPUS = 0.5


def group_shards(
    shard_ids: list[str],
    sources: dict[str, ShardSource],
    connections: int,
    threads: int,
    shards_per_task: int,
) -> list[tuple[str, ...]]:
    """Consecutive shards into download tasks. The host plan often gives a shard one host or a
    few, whose connection slots cap its requests, and whose slow stragglers would leave the
    task's threads idle until they answer. So a task takes shards until their hosts have twice
    `threads` connection slots (its threads then always find a host with a free slot while some
    hosts wait on stragglers), or `shards_per_task` shards, which bounds its memory. A shard
    whose slots the plan did not record counts as enough alone."""
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    slots = 0
    for shard_id in shard_ids:
        current.append(shard_id)
        known = sources[shard_id].connection_slots(connections)
        slots += 2 * threads if known is None else known
        if slots >= 2 * threads or len(current) >= shards_per_task:
            groups.append(tuple(current))
            current, slots = [], 0
    if current:
        groups.append(tuple(current))
    return groups


def download_shards(
    config: DownloadConfig, sources: dict[str, ShardSource], options: RunOptions
) -> StageReport:
    """Download every pool shard without a done marker, in tasks of `group_shards`; the report
    lists pool shards (each has its own marker or error record), not tasks."""
    pool = config.out
    done = completed_shards(pool, STAGE)
    todo = [shard_id for shard_id in sources if shard_id not in done]
    groups = group_shards(
        todo, sources, config.fetch.per_host_connections, config.threads, config.shards_per_task
    )
    members = {f"{index:05d}": group for index, group in enumerate(groups)}
    passes = options.stage_args()
    # Tasks are formed afresh from the unfinished shards by each call, so their records are too.
    fsio.remove(stats_dir(pool, TASK_STAGE))
    task_report = run_stage(
        TASK_STAGE,
        DownloadGroup(task_settings(config), sources, members, STAGE, passes["seed"]),
        [ShardTask(task_id, group) for task_id, group in members.items()],
        pool,
        num_cpus=DOWNLOAD_TASK_CPUS,
        max_in_flight=config.max_in_flight,
        **passes,
    )
    report = StageReport(STAGE, pool, skipped=[s for s in sources if s in done])
    for task in task_report.completed:
        for result in task["extra"]["shards"]:
            result = dict(result)
            (report.failed if result.pop("failed") else report.completed).append(result)
    for failure in task_report.failed:  # the worker died (past Ray's retries)
        for shard_id in members[failure["shard"]]:
            marker = marker_url(pool, STAGE, shard_id)
            if fsio.exists(marker):
                report.completed.append(fsio.read_json(marker, expect=dict))
                continue
            inputs = [sources[shard_id].plan_file]
            record = {**failure, "stage": STAGE, "shard": shard_id, "inputs": inputs}
            fsio.write_json(error_url(pool, STAGE, shard_id), record)
            report.failed.append(record)
    fsio.remove(stats_dir(pool, TASK_STAGE))
    return report


def task_settings(config: DownloadConfig) -> DownloadSettings:
    return DownloadSettings(config.fetch, config.image, config.threads)


def plan_settings(config: DownloadConfig) -> PlanSettings:
    """The plan a run asks for: from --input, or (without it) the one saved in the pool."""
    if config.inputs:
        files = input_files(config.inputs)
        if not files:
            raise ConfigError(f"no candidate Parquet files match {' '.join(config.inputs)}")
        return PlanSettings(tuple(files), config.samples_per_shard, config.plan_buckets)
    saved = load_plan(config.out)
    if saved is None:
        raise ConfigError(f"{config.out} has no download plan yet: give --input")
    return saved


def fix_planned_inputs(pool: str, settings: PlanSettings) -> None:
    """Record which inputs pass 1 could read when the shards are first planned; refuse a re-run in
    which another one reads (a repaired file): planning it now would move rows between shards
    that may be downloaded already, so it belongs in a new pool."""
    done = completed_shards(pool, PARTITION_STAGE)
    readable = [
        url
        for task, url in zip(partition_tasks(settings), settings.inputs)
        if task.shard_id in done
    ]
    record_url = fsio.join(pool, PLAN_DIR, PLANNED_INPUTS)
    if not fsio.exists(record_url):
        fsio.write_json(record_url, readable)
        return
    newly_readable = sorted(set(readable) - set(fsio.read_json(record_url, expect=list)))
    if newly_readable:
        raise fsio.PlanMismatchError(
            f"{newly_readable[0]} could not be read when this pool was planned and reads now; "
            f"download it into a new --out (or delete {pool} to plan everything again)"
        )


def run(config: DownloadConfig, options: RunOptions = RunOptions()) -> list[StageReport]:
    """Plan by host (two passes), download every unfinished shard, then optionally retry
    transient failures. One report per pass that ran; the last one's summary has the totals."""
    settings = plan_settings(config)
    pool = config.out
    fsio.makedirs(pool)
    save_or_check_plan(pool, settings)
    passes = options.stage_args()
    reports = [
        run_stage(
            PARTITION_STAGE,
            PartitionByHost(settings.buckets),
            partition_tasks(settings),
            pool,
            **passes,
        )
    ]
    fix_planned_inputs(pool, settings)
    buckets = bucket_tasks(pool)
    reports.append(
        run_stage(PLAN_STAGE, PlanShards(settings.samples_per_shard), buckets, pool, **passes)
    )
    if not reports[-1].ok:
        return reports  # shards are numbered across buckets: every bucket must be planned first
    sources = numbered_shards(pool, [task.shard_id for task in buckets])
    tasks = [ShardTask(shard_id, (source.plan_file,)) for shard_id, source in sources.items()]
    reports.append(download_shards(config, sources, options))
    if config.retry_failed:
        # Each --retry-failed invocation looks at the sidecars afresh, so its markers are per call.
        fsio.remove(stats_dir(pool, RETRY_STAGE))
        retry_ids = shards_with_retryable_rows(pool, list(sources))
        reports.append(
            run_stage(
                RETRY_STAGE,
                RetryFailedShard(task_settings(config), sources),
                [task for task in tasks if task.shard_id in retry_ids],
                pool,
                num_cpus=DOWNLOAD_TASK_CPUS,
                max_in_flight=config.max_in_flight,
                **passes,
            )
        )
    reports[-1].summary.update(pool_summary(pool, list(sources)))
    reports[-1].notes.append(
        f"pool: {reports[-1].summary['successes']} of {reports[-1].summary['count']} rows "
        f"downloaded in {len(sources)} shards"
    )
    return reports


def pool_summary(pool: str, shard_ids: list[str]) -> dict[str, Any]:
    """Totals over the shards' markers (the download pass's, updated by any retry)."""
    totals = {"count": 0, "successes": 0, "shards_done": 0}
    for shard_id in shard_ids:
        marker = marker_url(pool, STAGE, shard_id)
        if fsio.exists(marker):
            extra = fsio.read_json(marker, expect=dict)["extra"]
            totals["count"] += extra["count"]
            totals["successes"] += extra["successes"]
            totals["shards_done"] += 1
    return totals


def config_from_args(args: argparse.Namespace) -> DownloadConfig:
    fetch = FetchConfig(
        user_agent_token=args.user_agent_token,
        allow_networks=tuple(args.allow_network or ()),
        timeouts=Timeouts(args.connect_timeout, args.read_timeout, args.total_timeout),
        max_bytes=args.max_bytes,
        retries=args.retries,
        per_host_connections=args.per_host_connections,
        per_host_requests_per_s=args.per_host_rate,
        respect_robots_txt=not args.ignore_robots_txt,
    )
    image = ImageOptions(
        image_size=args.image_size,
        resize_mode=args.resize_mode,
        max_pixels=args.max_pixels,
        jpeg_quality=args.jpeg_quality,
    )
    return DownloadConfig(
        out=args.out,
        inputs=tuple(args.input or ()),
        fetch=fetch,
        image=image,
        threads=args.threads,
        samples_per_shard=args.samples_per_shard,
        plan_buckets=args.plan_buckets,
        retry_failed=args.retry_failed,
        shards_per_task=args.shards_per_task,
    )


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
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=10_000,
        help="rows per pool shard; a host with more URLs is split into ceil(urls / this) shards, "
        "each with its share of the per-host limits",
    )
    parser.add_argument(
        "--plan-buckets",
        type=int,
        default=DEFAULT_PLAN_BUCKETS,
        help="host-hash partitions of the plan (each must fit in one worker's memory)",
    )
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
    parser.add_argument("--threads", type=int, default=64, help="download threads per task")
    parser.add_argument(
        "--shards-per-task",
        type=int,
        default=DEFAULT_SHARDS_PER_TASK,
        help="most pool shards one task downloads at once, on its --threads (it takes more than "
        "one only while their hosts have fewer than 2 x --threads connection slots)",
    )
    parser.add_argument(
        "--per-host-connections",
        type=int,
        default=16,
        help="simultaneous requests to one host, across the whole cluster",
    )
    parser.add_argument(
        "--per-host-rate",
        type=float,
        default=0.0,
        metavar="REQUESTS_PER_S",
        help="requests per second to one host, across the whole cluster (0: no limit but the "
        "host's robots.txt Crawl-delay, which is always honoured)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="immediate retries of transient failures"
    )
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--read-timeout", type=float, default=10.0, help="longest silence")
    parser.add_argument(
        "--total-timeout",
        type=float,
        default=30.0,
        help="deadline of one request: connect, headers and body together",
    )
    parser.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024, help="per image")
    parser.add_argument("--max-pixels", type=int, default=80_000_000, help="decoded pixel cap")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument(
        "--ignore-robots-txt",
        action="store_true",
        help="only for sources you own; X-Robots-Tag is still honoured",
    )
    add_run_options(parser)
    parser.set_defaults(func=cli_main(run, config_from_args))
