"""`python -m curation submit -- COMMAND ...`: run a curation command on a Ray cluster.

The command is submitted through the Ray Jobs API to the cluster whose dashboard address is in
RAY_ADDRESS (e.g. http://head:8265), shipping this working directory and the environment the
stages need (AWS credentials and endpoint, offline switches); its logs stream back here and the
exit code is the job's. Without a Jobs address, commands run locally (`ray.init()`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time

PASSED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "NO_ALBUMENTATIONS_UPDATE",
    "WANDB_MODE",
)
EXCLUDES = [
    ".venv",
    ".git",
    "demo-run",
    "runs",
    "bench-out",
    "**/__pycache__",
    "*.tar",
    "*.parquet",
    "*.warc.gz",
    "docs/screenshots",
]


def jobs_address() -> str | None:
    """The Ray Jobs API address, when RAY_ADDRESS names one (http:// or https://)."""
    address = os.environ.get("RAY_ADDRESS", "")
    return address if address.startswith(("http://", "https://")) else None


def runtime_env(working_dir: str) -> dict:
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    return {"working_dir": working_dir, "excludes": EXCLUDES, "env_vars": env}


def submit_when_ready(client, entrypoint: str, env: dict, timeout_s: float = 300.0) -> str:
    """Submit, waiting while a just-started head still reports that no job agent is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=env)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def submit(command: list[str], address: str, working_dir: str = ".", wait: bool = True) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    entrypoint = "python -m curation " + shlex.join(command)
    job_id = submit_when_ready(client, entrypoint, runtime_env(working_dir))
    print(f"submitted {job_id} to {address}: {entrypoint}", flush=True)
    if not wait:
        return 0

    async def stream_logs() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(stream_logs())
    status = client.get_job_status(job_id)
    while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        time.sleep(1)
        status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit", help="run a curation command on the Ray cluster at RAY_ADDRESS (Jobs API)"
    )
    parser.add_argument("--address", default=None, help="Jobs API address (default: RAY_ADDRESS)")
    parser.add_argument("--working-dir", default=".", help="folder shipped to the cluster")
    parser.add_argument("--no-wait", action="store_true", help="return once submitted")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("nothing to submit: give a command after --", file=sys.stderr)
        return 2
    address = args.address or jobs_address()
    if address is None:
        print(
            "RAY_ADDRESS is not a Ray Jobs address (http://HEAD:8265); pass --address",
            file=sys.stderr,
        )
        return 2
    return submit(command, address, args.working_dir, wait=not args.no_wait)
