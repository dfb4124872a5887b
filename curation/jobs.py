"""`python -m curation submit -- COMMAND ...`: run a curation command on a Ray cluster.

The command is submitted through the Ray Jobs API to the cluster whose dashboard address is in
RAY_ADDRESS (e.g. http://head:8265), shipping this working directory and the environment the
stages need (AWS credentials and endpoint, offline switches); its logs stream back here and the
exit code is the job's. Without a Jobs address, commands run locally (`ray.init()`).

Token authentication (Ray 2.52+; on by default for `ray start --head` in Ray 2.60): as Ray
documents it, the client reads the cluster's token from RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
names, or ~/.ray/auth_token (`ray get-auth-token` on the head prints it), with RAY_AUTH_MODE=token.
When a token is there and RAY_AUTH_MODE is unset, submit sets the mode itself, as `ray start`
does; a cluster that asks for a token the client lacks gets a message saying where to put it.

The job runs on the head in a shell whose PATH is whatever the head was started with, so a bare
`python` may be another interpreter than the one running Ray (or none). The entrypoint runs
`--python` (default: this interpreter's path, which is the cluster's when both use one image or
virtualenv) and falls back to the node's python3 when that path is not there. The job runs in
Ray's copy of the working directory, where a relative path would be read and written: arguments
that name relative local paths are made absolute against this directory (right for a head on
this machine or on storage both share; use URLs such as s3://… otherwise).
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


# Options whose value is a local file or folder even when it has no slash and does not exist yet.
PATH_OPTIONS = frozenset(
    {
        "--out",
        "--input",
        "--pool",
        "--root",
        "--run",
        "--world",
        "--metadata",
        "--weights",
        "--model-config",
        "--init-random-weights",
        "--eval-sets",
        "--cc-root",
    }
)
AUTH_HELP = (
    "the Ray cluster at {address} asks for an authentication token: run `ray get-auth-token` on "
    "its head and set RAY_AUTH_TOKEN to it here (or put it in ~/.ray/auth_token, or name a file "
    "holding it with RAY_AUTH_TOKEN_PATH); see "
    "https://docs.ray.io/en/latest/ray-security/token-auth.html"
)


def _is_relative_path(value: str, named: bool) -> bool:
    if not value or "://" in value or os.path.isabs(value):
        return False
    return named or "/" in value or os.path.exists(value)


def absolute_paths(command: list[str]) -> tuple[list[str], list[str]]:
    """`command` with every relative local path made absolute (against this working directory),
    and the paths it changed. A path is a value of a PATH_OPTIONS option, an argument with a
    slash that is not a URL, or one that exists here; the first word (the subcommand) is not."""
    out, changed = command[:1], []
    for index, arg in enumerate(command[1:], start=1):
        option, equals, inline = arg.partition("=")
        if arg.startswith("-"):
            if equals and option in PATH_OPTIONS and _is_relative_path(inline, named=True):
                changed.append(inline)
                arg = f"{option}={os.path.abspath(inline)}"
        elif _is_relative_path(arg, named=command[index - 1] in PATH_OPTIONS):
            changed.append(arg)
            arg = os.path.abspath(arg)
        out.append(arg)
    return out, changed


def job_entrypoint(command: list[str], python: str) -> str:
    """A shell command running `python -m curation COMMAND` on the head with `python`, or with
    the node's python3 (then python) when that path is not there."""
    return (
        f"PY={shlex.quote(python)}; "
        '[ -x "$PY" ] || PY="$(command -v python3 || command -v python)"; '
        f'exec "$PY" -m curation {shlex.join(command)}'
    )


def enable_token_auth_if_token_available() -> None:
    """RAY_AUTH_MODE=token when a token is at hand and the mode is unset (what `ray start` does)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # Ray before 2.52 has no token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


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


def submit(
    command: list[str],
    address: str,
    working_dir: str = ".",
    wait: bool = True,
    python: str = sys.executable,
) -> int:
    import ray.exceptions
    from ray.job_submission import JobStatus, JobSubmissionClient

    # Ray before 2.52 has no token authentication (and no such error).
    authentication_error = getattr(ray.exceptions, "AuthenticationError", ())

    command, changed = absolute_paths(command)
    if changed:
        # The job runs in Ray's copy of the working directory: a relative path would land there.
        print(f"relative paths made absolute (the cluster must see them): {changed}", flush=True)
    entrypoint = job_entrypoint(command, python)
    enable_token_auth_if_token_available()
    try:
        client = JobSubmissionClient(address)
        job_id = submit_when_ready(client, entrypoint, runtime_env(working_dir))
    except authentication_error as error:
        print(f"{AUTH_HELP.format(address=address)}\n({error})", file=sys.stderr)
        return 2
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
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter on the head that runs the command (default: this one's path; the "
        "head's python3 when that path is not there)",
    )
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
    return submit(command, address, args.working_dir, wait=not args.no_wait, python=args.python)
