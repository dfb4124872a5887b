"""`python -m curation dashboard --run DIR`: browse a run's curation statistics in a browser."""

from __future__ import annotations

import argparse

from curation.dashboard.app import Dashboard
from curation.dashboard.server import check_loopback, make_server


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dashboard", help="serve the curation dashboard on 127.0.0.1")
    parser.add_argument("--run", required=True, help="run folder (local path or s3://…)")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)"
    )
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        check_loopback(args.host)
    except ValueError as exc:
        raise SystemExit(f"dashboard: {exc}") from None
    server = make_server(Dashboard(args.run), args.host, args.port)
    host, port = server.server_address[:2]
    print(f"dashboard for {args.run} at http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
