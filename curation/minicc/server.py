"""Serve the mini web: one threaded stdlib HTTP server per simulated host, all on one port.

Each host answers from its slice of www/routes.json (see faults.py for the route keys) and has its
own robots.txt. The forbidden address gets a listener too, which answers anything and records it,
so a test can prove a downloader never went there. Every request is appended to a JSONL log, with
the number of requests to that host in flight when it arrived; `host_load()` gives each host's
peak concurrency and peak requests in any one-second window, so a test can check a crawler's
politeness where it matters, at the server. `latency_s` delays every answer (a distant host), so
that concurrency shows.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from curation.minicc.build import load_world
from curation.minicc.scales import FORBIDDEN_ADDRESSES, HOSTS
from curation.minicc.www import ROUTES_FILE

MAX_DELAY_S = 10.0
REQUEST_LOG = "requests.jsonl"
SERVER_STATE = "server.json"


def find_free_port(
    addresses: tuple[str, ...] = (*HOSTS, *FORBIDDEN_ADDRESSES), attempts: int = 50
) -> int:
    """A port that every given address can bind now (for building a world to serve in tests)."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port is free on every one of {addresses}")


class _RequestLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the server

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            if self._stream.closed:
                # A slow request can finish after stop(); it still happened, so it is logged.
                with open(self.path, "a", encoding="utf-8") as late:
                    late.write(line)
                return
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._stream.close()


class _HostState:
    """What one host serves, plus its per-route request counters (for fail-first routes)."""

    def __init__(
        self, address: str, www_root: Path, table: dict[str, Any] | None, log: _RequestLog
    ) -> None:
        self.address, self.www_root, self.log = address, www_root, log
        self.forbidden = table is None
        self.routes: dict[str, dict[str, Any]] = (table or {}).get("routes", {})
        self.robots_txt: str | None = (table or {}).get("robots_txt")
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.arrivals: list[float] = []  # time.monotonic() of every request

    def arrive(self) -> int:
        """A request arrived; returns how many (itself included) are now in flight."""
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return self.in_flight

    def answering(self) -> None:
        """The server starts answering: from here on the client is reading, not waiting."""
        with self._lock:
            self.in_flight -= 1

    def load(self, window_s: float = 1.0) -> dict[str, Any]:
        with self._lock:
            arrivals = sorted(self.arrivals)
            peak = self.peak_in_flight
        most, first = 0, 0
        for last, arrived in enumerate(arrivals):
            while arrived - arrivals[first] >= window_s:
                first += 1
            most = max(most, last - first + 1)
        return {"requests": len(arrivals), "peak_concurrency": peak, "peak_requests_per_s": most}

    def count(self, path: str) -> int:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            return self._counts[path]


class _Handler(BaseHTTPRequestHandler):
    server_version = "minicc/1.0"
    state: _HostState  # set on the per-host subclass
    latency_s: float = 0.0  # set on the per-host subclass
    in_flight: int = 0
    answered: bool = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # our own JSONL log replaces stderr chatter

    def do_GET(self) -> None:
        self._arrive_and_answer(send_body=True)

    def do_HEAD(self) -> None:
        self._arrive_and_answer(send_body=False)

    def _arrive_and_answer(self, send_body: bool) -> None:
        # Counted in flight until the answer starts (route delays included): once the client has
        # read it, it may send its next request while this thread still winds down, which is not
        # concurrency it caused.
        self.in_flight = self.state.arrive()
        self.answered = False
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            self._answer(send_body)
        finally:
            self._start_answer()

    def _start_answer(self) -> None:
        if not self.answered:
            self.answered = True
            self.state.answering()

    def _record(self, status: int) -> None:
        route = self.state.routes.get(urlsplit(self.path).path, {})
        fault = "forbidden_address" if self.state.forbidden else route.get("fault")
        self.state.log.write(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "host": self.state.address,
                "port": self.server.server_address[1],
                "method": self.command,
                "path": self.path,
                "user_agent": self.headers.get("User-Agent", ""),
                "status": status,
                "fault": fault,
                "in_flight": self.in_flight,
            }
        )

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
        send_body: bool = True,
        declared_length: int | None = None,
    ) -> None:
        self._start_answer()
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header(
            "Content-Length", str(len(body) if declared_length is None else declared_length)
        )
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def _answer(self, send_body: bool) -> None:
        state = self.state
        path = urlsplit(self.path).path or "/"
        if state.forbidden:
            self._send(200, b"internal service\n", send_body=send_body)
            return
        if path == "/robots.txt":
            if state.robots_txt is None:
                self._send(404, b"not found\n", send_body=send_body)
            else:
                self._send(200, state.robots_txt.encode(), send_body=send_body)
            return
        route = state.routes.get(path)
        if route is None:
            self._send(404, b"not found\n", send_body=send_body)
            return
        fail_first = route.get("fail_first")
        if fail_first and state.count(path) <= fail_first["count"]:
            self._send(
                fail_first["status"],
                b"try again later\n",
                headers={"Retry-After": str(fail_first["retry_after"])},
                send_body=send_body,
            )
            return
        if route.get("delay_s"):
            time.sleep(min(float(route["delay_s"]), MAX_DELAY_S))
        if "redirect" in route:
            self._send(
                route["redirect"]["status"],
                b"",
                headers={"Location": route["redirect"]["location"]},
                send_body=send_body,
            )
            return
        if "file" not in route:
            self._send(int(route.get("status", 500)), b"error\n", send_body=send_body)
            return
        body = (state.www_root / route["file"]).read_bytes()
        if "truncate_fraction" in route:
            # Promise the whole file, send part of it, then close the connection.
            sent = body[: int(len(body) * route["truncate_fraction"])]
            self._send(
                200,
                sent,
                route["content_type"],
                route.get("headers"),
                send_body,
                declared_length=len(body),
            )
            self.close_connection = True
            return
        self._send(
            int(route.get("status", 200)),
            body,
            route["content_type"],
            route.get("headers"),
            send_body,
        )


class _LoopbackHTTPServer(ThreadingHTTPServer):
    request_queue_size = 128  # a parallel downloader opens many connections at once

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-answer (a downloader's read timeout on the planted slow
        routes does exactly that) is the web as usual, not a server error: no traceback for it.
        Anything else is printed as socketserver does."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class WorldServer:
    """All the mini web's listeners. Use as a context manager, or call start() / stop()."""

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        log_path: Path | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.root = Path(root)
        self.latency_s = min(float(latency_s), MAX_DELAY_S)
        world = load_world(self.root)
        self.port = int(port if port is not None else world["port"])
        if self.port != world["port"]:
            raise ValueError(
                f"{self.root} was built for port {world['port']} (its pages and "
                f"redirects name it); serve on that port or rebuild with --port "
                f"{self.port}"
            )
        routes_path = self.root / "www" / ROUTES_FILE
        if not routes_path.exists():
            raise FileNotFoundError(f"{routes_path} is missing; rebuild the world")
        self.table = json.loads(routes_path.read_text())
        self.log_path = Path(log_path) if log_path else self.root / REQUEST_LOG
        self.hosts: list[str] = list(self.table["hosts"])
        self.forbidden_addresses: list[str] = list(self.table["forbidden_addresses"])
        self.base_urls = [f"http://{h}:{self.port}" for h in self.hosts]
        self.forbidden_urls = [f"http://{h}:{self.port}" for h in self.forbidden_addresses]
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._log: _RequestLog | None = None
        self._states: dict[str, _HostState] = {}

    def host_load(self, window_s: float = 1.0) -> dict[str, dict[str, Any]]:
        """Per host: requests, peak concurrency, and peak requests in any `window_s` window."""
        return {address: state.load(window_s) for address, state in self._states.items()}

    def start(self) -> WorldServer:
        if self._servers:
            return self  # already serving
        self._log = _RequestLog(self.log_path)
        www_root = self.root / "www"
        listeners = [(h, self.table["hosts"][h]) for h in self.hosts]
        listeners += [(h, None) for h in self.forbidden_addresses]
        try:
            for address, table in listeners:
                state = self._states[address] = _HostState(address, www_root, table, self._log)
                handler = type(
                    "HostHandler", (_Handler,), {"state": state, "latency_s": self.latency_s}
                )
                try:
                    server = _LoopbackHTTPServer((address, self.port), handler)
                except OSError as error:
                    raise RuntimeError(
                        f"cannot listen on {address}:{self.port} ({error}). The mini web needs "
                        f"every address of 127.0.0.0/8 on the loopback interface (Linux default) "
                        f"and the port free on each of them"
                    ) from error
                self._servers.append(server)
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.1},
                    name=f"minicc-{address}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        self._threads.clear()
        if self._log is not None:
            self._log.close()
            self._log = None

    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "port": self.port,
            "base_urls": self.base_urls,
            "forbidden_urls": self.forbidden_urls,
            "log": str(self.log_path),
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_world(
    root: Path, port: int | None = None, log_path: Path | None = None, latency_s: float = 0.0
) -> WorldServer:
    """Start serving `root` in background threads and return the running handle.

    Use `with serve_world(root) as web: ... web.base_urls ...`, or call `web.stop()` yourself.
    """
    return WorldServer(root, port=port, log_path=log_path, latency_s=latency_s).start()
