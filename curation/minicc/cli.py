"""`python -m curation minicc build|serve|tokenizer`: build the mini Common Crawl, serve its images, or train the BPE of its text."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from curation.minicc.scales import DEFAULT_PORT, SCALES


def _build(args: argparse.Namespace) -> int:
    from curation.minicc.build import build_world

    try:
        world = build_world(
            Path(args.out),
            seed=args.seed,
            scale_name=args.scale,
            port=args.port,
            processes=args.processes,
        )
    except ValueError as error:
        print(f"minicc build: {error}", file=sys.stderr)
        return 2
    counts = world["counts"]
    print(
        f"minicc: built {world['snapshot']} ({world['scale']}) in {args.out} in "
        f"{world['build_seconds']['total']:.1f} s: {counts['pages']} pages, "
        f"{counts['img_tags']} <img> tags, {counts['pairs']} image-text pairs, "
        f"{counts['pictures']} pictures, {sum(counts['fault_urls'].values())} fault URLs"
    )
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in world["build_seconds"].items())
    print(f"minicc: build time by phase: {phases}")
    print(
        f"minicc: allow-list {world['allowed_cidr']}; serve with "
        f"`python -m curation minicc serve --root {args.out}`"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from curation.minicc.server import SERVER_STATE, serve_world

    try:
        web = serve_world(
            Path(args.root), port=args.port, log_path=Path(args.log) if args.log else None
        )
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"minicc serve: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    state_path = Path(args.root) / SERVER_STATE
    state_path.write_text(json.dumps(web.state(), indent=1))
    print(
        f"minicc: serving {len(web.base_urls)} hosts on port {web.port} "
        f"({web.base_urls[0]} .. {web.base_urls[-1]}), forbidden listener "
        f"{', '.join(web.forbidden_urls)}; log {web.log_path}",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        web.stop()
        state_path.unlink(missing_ok=True)
    print("minicc: stopped", flush=True)
    return 0


def _tokenizer(args: argparse.Namespace) -> int:
    from curation.minicc.tokenizer import DEFAULT_VOCAB_SIZE, train_tokenizer

    out = train_tokenizer(Path(args.out), args.vocab_size or DEFAULT_VOCAB_SIZE)
    print(f"minicc: wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "minicc",
        help="build or serve the built-in mini Common Crawl, or train its BPE",
        description=__doc__,
    )
    commands = parser.add_subparsers(dest="minicc_command", required=True, metavar="ACTION")
    build = commands.add_parser("build", help="write the snapshot, served files, truth, evals")
    build.add_argument("--out", required=True, help="output folder (new, empty or a former build)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--scale", choices=sorted(SCALES), default="small")
    build.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="the port every simulated host's URLs use"
    )
    build.add_argument(
        "--processes", type=int, default=None, help="render workers (default: CPU count, at most 4)"
    )
    build.set_defaults(func=_build)
    serve = commands.add_parser("serve", help="serve a built world until SIGTERM/SIGINT")
    serve.add_argument("--root", required=True, help="a folder written by `minicc build`")
    serve.add_argument(
        "--port", type=int, default=None, help="must equal the build's port (the default)"
    )
    serve.add_argument("--log", default=None, help="request log (default ROOT/requests.jsonl)")
    serve.set_defaults(func=_serve)
    tokenizer = commands.add_parser(
        "tokenizer", help="train the byte-level BPE of the world's text (the tiny preset's)"
    )
    tokenizer.add_argument("--out", required=True, help="tokenizer.json to write")
    tokenizer.add_argument("--vocab-size", type=int, default=None)
    tokenizer.set_defaults(func=_tokenizer)
