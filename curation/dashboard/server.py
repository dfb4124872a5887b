"""A small HTTP server for the dashboard: JSON under /api/, the static front end, pool images.

Stdlib only (ThreadingHTTPServer): the pages are a static HTML/JS app with hand-drawn SVG charts,
so there is nothing to fetch from a CDN and nothing to install. It binds loopback addresses only,
and answers only requests whose Host header names the bound address or `localhost`: otherwise a
web page could point a name of its own at 127.0.0.1 (DNS rebinding) and read this login-less API.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from curation.dashboard.app import Dashboard

log = logging.getLogger(__name__)
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """The front end's files by URL path, read once from the package."""
    files = {}
    for entry in resources.files("curation.dashboard").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in STATIC_TYPES:
            files[f"/static/{entry.name}"] = (entry.read_bytes(), STATIC_TYPES[suffix])
    files["/"] = files["/static/index.html"]
    return files


def check_loopback(host: str) -> None:
    """Refuse to serve on anything but a loopback address: the dashboard has no authentication."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"--host {host!r}: the dashboard binds loopback addresses only (127.0.0.0/8, ::1)"
        )


def host_name(header: str | None) -> str | None:
    """The host of a Host header, without its port and IPv6 brackets, lower-cased."""
    if not header:
        return None
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else None
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def to_json(payload: Any) -> bytes:
    """JSON with NaN/inf as null (JSON has no NaN; browsers reject it)."""
    return json.dumps(_finite(payload), allow_nan=False, default=_default).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return str(value)


def make_handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    files = static_files()
    pages = {
        "/api/overview": lambda q: dashboard.page("overview"),
        "/api/crawl": lambda q: dashboard.page("crawl"),
        "/api/metaclip": lambda q: dashboard.page("metaclip"),
        "/api/metaclip/search": lambda q: dashboard.page("metaclip_search", q.get("q", "")),
        "/api/score": lambda q: dashboard.page("score"),
        "/api/neardup": lambda q: dashboard.page("neardup"),
        "/api/resampling": lambda q: dashboard.page("resampling"),
        "/api/training": lambda q: dashboard.page("training_page", q.get("run") or None),
        "/api/samples": lambda q: dashboard.page(
            "samples", q.get("decision", "all"), int(q.get("page", 0)), int(q.get("size", 24))
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "curation-dashboard"

        def do_GET(self) -> None:
            if host_name(self.headers.get("Host")) not in self.server.allowed_hosts:
                self._error(HTTPStatus.FORBIDDEN, "this dashboard answers only its own address")
                return
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                if url.path in files:
                    self._send(HTTPStatus.OK, *files[url.path])
                elif url.path in pages:
                    self._send(HTTPStatus.OK, to_json(pages[url.path](query)), "application/json")
                elif url.path == "/api/image":
                    data, content_type = dashboard.image(
                        query.get("shard", ""), query.get("key", "")
                    )
                    self._send(HTTPStatus.OK, data, content_type, cache=True)
                else:
                    self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
            except (KeyError, FileNotFoundError) as exc:
                self._error(HTTPStatus.NOT_FOUND, str(exc))
            except ValueError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))
            except Exception as exc:  # one bad request must not stop the server
                log.exception("dashboard request %s failed", self.path)
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

        def _send(
            self, status: HTTPStatus, body: bytes, content_type: str, cache: bool = False
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, to_json({"error": message}), "application/json")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(
    dashboard: Dashboard, host: str = "127.0.0.1", port: int = 8050
) -> ThreadingHTTPServer:
    """A server bound to (host, port); port 0 picks a free one (see `server.server_address`)."""
    check_loopback(host)
    server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
    server = server_class((host, port), make_handler(dashboard))
    server.daemon_threads = True
    server.allowed_hosts = {"localhost", host.lower(), server.server_address[0]}
    return server
