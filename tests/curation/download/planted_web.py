"""A small web server on a loopback address whose paths behave as planted.

Tests (and the download benchmark, when no mini Common Crawl world is at hand) plant routes: an
image, a status code, a delay before the headers or the body, a redirect, an opt-out header, a
body cut short, failures for the first N requests. The server logs every request and the peak
number of simultaneous requests (per path and in all), so tests can assert what a downloader did (and did not)
ask for. It refuses to bind anything but a loopback address.
"""

from __future__ import annotations

import http.server
import ipaddress
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-response is what half of the planted routes provoke


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    headers: dict[str, str] = field(default_factory=dict)
    delay_headers_s: float = 0.0
    delay_body_s: float = 0.0
    truncate_at: int | None = None  # bytes sent while Content-Length promises the whole body
    chunked: bool = False  # no Content-Length: the body is streamed in chunks
    fail_first: int = 0  # the first N requests get `fail_status` instead
    fail_status: int = 503
    retry_after: str | None = None
    redirect_to: str | None = None
    redirect_status: int = 302
    trickle: str | None = None  # "headers" or "body": sent one byte per `trickle_interval_s`
    trickle_interval_s: float = 1.0


class PlantedWeb:
    """Use as a context manager: `with PlantedWeb() as web: web.plant("/a.jpg", Route(...))`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"PlantedWeb binds loopback addresses only, not {host}")
        self.host = host
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request, in `requests` order
        self.peak_concurrency: Counter = Counter()  # per path
        self.peak_total_concurrency = 0
        self._active_total = 0
        self._active: Counter = Counter()
        self._served: Counter = Counter()
        self._lock = threading.Lock()
        self._server = _QuietServer((host, port), self._handler_class())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def plant(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for requested in self.requests if requested == path)

    def _enter(self, path: str) -> int:
        with self._lock:
            self.requests.append(path)
            self.arrivals.append(time.monotonic())
            self._active[path] += 1
            self.peak_concurrency[path] = max(self.peak_concurrency[path], self._active[path])
            self._active_total += 1
            self.peak_total_concurrency = max(self.peak_total_concurrency, self._active_total)
            self._served[path] += 1
            return self._served[path]

    def _leave(self, path: str) -> None:
        with self._lock:
            self._active[path] -= 1
            self._active_total -= 1

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path
                route = web.routes.get(path)
                # A request counts as in flight until the server starts answering it: once the
                # client has read the answer it may send the next one while this thread is
                # still winding down, which is not concurrency the client caused.
                nth = web._enter(path)
                try:
                    time.sleep(route.delay_headers_s if route else 0.0)
                finally:
                    web._leave(path)
                try:
                    web._serve(self, route, nth)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler

    @staticmethod
    def _serve(handler: http.server.BaseHTTPRequestHandler, route: Route | None, nth: int) -> None:
        if route is None:
            route = Route(b"not found", status=404, content_type="text/plain")
        if nth <= route.fail_first:
            headers = {"Retry-After": route.retry_after} if route.retry_after else {}
            route = Route(
                b"try later", status=route.fail_status, content_type="text/plain", headers=headers
            )
        if route.redirect_to is not None:
            route = Route(
                b"", status=route.redirect_status, headers={"Location": route.redirect_to}
            )
        if route.trickle == "headers":
            head = (
                f"HTTP/1.1 {route.status} OK\r\nContent-Type: {route.content_type}\r\n"
                f"Content-Length: {len(route.body)}\r\n\r\n"
            ).encode()
            PlantedWeb._trickle(handler, head, route.trickle_interval_s)
            handler.wfile.write(route.body)
            return
        handler.send_response(route.status)
        handler.send_header("Content-Type", route.content_type)
        for name, value in route.headers.items():
            handler.send_header(name, value)
        if route.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(len(route.body)))
        if route.truncate_at is not None:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()
        time.sleep(route.delay_body_s)
        if route.chunked:
            for start in range(0, len(route.body), 16 * 1024):
                piece = route.body[start : start + 16 * 1024]
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        elif route.trickle == "body":
            PlantedWeb._trickle(handler, route.body, route.trickle_interval_s)
        elif route.truncate_at is not None:
            handler.wfile.write(route.body[: route.truncate_at])
            handler.close_connection = True
        else:
            handler.wfile.write(route.body)

    @staticmethod
    def _trickle(
        handler: http.server.BaseHTTPRequestHandler, data: bytes, interval_s: float
    ) -> None:
        """Send `data` a byte at a time: every read on the other side returns, none times out."""
        for index in range(len(data)):
            handler.wfile.write(data[index : index + 1])
            handler.wfile.flush()
            time.sleep(interval_s)
