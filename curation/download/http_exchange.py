"""One HTTP request to an address we already checked, with its body read under limits.

`http.client` on a socket connected to the pinned IP (TLS still verifies the host name), kept
alive per worker thread and per destination. The response headers are available before any body
byte is read, so opt-out headers and oversized `Content-Length` cost no transfer; the body is read
in chunks under a byte limit, a per-read timeout and a total deadline, and the first bytes can be
inspected (content sniffing) before the rest is fetched.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message

from curation.download.address_policy import IPAddress
from curation.download.reasons import (
    CONNECTION_ERROR,
    PROTOCOL_ERROR,
    TIMEOUT,
    TOO_LARGE,
    TRUNCATED,
    DownloadFailure,
)

CHUNK_BYTES = 64 * 1024
SNIFF_BYTES = 32


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    read_s: float = 10.0
    total_s: float = 30.0


@dataclass(frozen=True)
class Destination:
    """Where one request goes: the URL's parts plus the address we resolved and approved."""

    scheme: str
    host: str
    port: int
    address: IPAddress
    path: str  # path and query, as sent on the request line

    @property
    def connection_key(self) -> tuple[str, str, int, str]:
        return (self.scheme, self.host, self.port, str(self.address))


def _pinned_connection(
    destination: Destination, connect_timeout: float
) -> http.client.HTTPConnection:
    def connect_to_checked_address(address, timeout, source_address=None):
        return socket.create_connection(
            (str(destination.address), address[1]), connect_timeout, source_address
        )

    if destination.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            destination.host,
            destination.port,
            timeout=connect_timeout,
            context=ssl.create_default_context(),
        )
    else:
        connection = http.client.HTTPConnection(
            destination.host, destination.port, timeout=connect_timeout
        )
    connection._create_connection = connect_to_checked_address  # type: ignore[attr-defined]
    return connection


class ConnectionPool:
    """Idle keep-alive connections, one set per worker thread (http.client is not thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _idle(self) -> dict[tuple, http.client.HTTPConnection]:
        if not hasattr(self._local, "idle"):
            self._local.idle = {}
        return self._local.idle

    def take(self, destination: Destination) -> http.client.HTTPConnection | None:
        return self._idle().pop(destination.connection_key, None)

    def give_back(self, destination: Destination, connection: http.client.HTTPConnection) -> None:
        stale = self._idle().pop(destination.connection_key, None)
        if stale is not None:
            stale.close()
        self._idle()[destination.connection_key] = connection


class Response:
    """A response whose headers have arrived and whose body has not been read yet."""

    def __init__(
        self,
        destination: Destination,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        pool: ConnectionPool,
        deadline: float,
        read_timeout: float,
    ):
        self.destination = destination
        self.status = response.status
        self.headers: Message = response.msg
        self.bytes_read = 0
        self._connection = connection
        self._response = response
        self._pool = pool
        self._deadline = deadline
        self._read_timeout = read_timeout

    def header_values(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []

    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def read_body(
        self, max_bytes: int, inspect_head: Callable[[bytes], None] | None = None
    ) -> bytes:
        """The whole body; aborts (closing the connection) past `max_bytes` or the deadline.

        `inspect_head` sees the first bytes before the rest is read and may raise to abort.
        """
        declared = self.content_length()
        if declared is not None and declared > max_bytes:
            self.close()
            raise DownloadFailure(TOO_LARGE, f"Content-Length {declared} > {max_bytes}")
        parts: list[bytes] = []
        head_checked = inspect_head is None
        try:
            while True:
                self._set_read_timeout()
                chunk = self._response.read(CHUNK_BYTES)
                if not chunk:
                    break
                parts.append(chunk)
                self.bytes_read += len(chunk)
                if self.bytes_read > max_bytes:
                    raise DownloadFailure(TOO_LARGE, f"body passed {max_bytes} bytes")
                if not head_checked and self.bytes_read >= SNIFF_BYTES:
                    head_checked = True
                    inspect_head(b"".join(parts))  # type: ignore[misc]
            if declared is not None and self.bytes_read < declared:
                # http.client's read(n) returns b"" at a premature EOF instead of raising.
                raise DownloadFailure(TRUNCATED, f"got {self.bytes_read} of {declared} bytes")
            if not head_checked:
                inspect_head(b"".join(parts))  # type: ignore[misc]
        except http.client.IncompleteRead as exc:
            self.close()
            raise DownloadFailure(
                TRUNCATED,
                f"got {len(exc.partial) + self.bytes_read} bytes, {exc.expected} more expected",
            ) from None
        except BaseException as exc:  # noqa: BLE001 - hang up whatever happened; re-raised below
            self.close()
            raise translate_network_error(exc) from None
        self.finish()
        return b"".join(parts)

    def discard(self, max_drain_bytes: int = CHUNK_BYTES) -> None:
        """Done with this response without wanting its body: drain a small one, else hang up."""
        length = self.content_length()
        if length is not None and length <= max_drain_bytes:
            try:
                self._set_read_timeout()
                self._response.read()
                self.finish()
                return
            except (OSError, http.client.HTTPException):
                pass
        self.close()

    def finish(self) -> None:
        if self._response.will_close:
            self.close()
        else:
            self._pool.give_back(self.destination, self._connection)

    def close(self) -> None:
        self._connection.close()

    def _set_read_timeout(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise DownloadFailure(TIMEOUT, "total time limit reached")
        if self._connection.sock is not None:
            self._connection.sock.settimeout(min(self._read_timeout, remaining))


def translate_network_error(exc: BaseException) -> BaseException:
    """Map socket/http.client exceptions onto reason codes; other exceptions pass through."""
    if isinstance(exc, DownloadFailure):
        return exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return DownloadFailure(TIMEOUT, str(exc) or "timed out")
    if isinstance(exc, ssl.SSLError):
        return DownloadFailure(CONNECTION_ERROR, f"TLS: {exc}")
    if isinstance(exc, http.client.IncompleteRead):
        return DownloadFailure(TRUNCATED, str(exc))
    if isinstance(exc, (http.client.RemoteDisconnected, ConnectionError)):
        return DownloadFailure(CONNECTION_ERROR, str(exc) or type(exc).__name__)
    if isinstance(exc, http.client.HTTPException):
        return DownloadFailure(PROTOCOL_ERROR, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return DownloadFailure(CONNECTION_ERROR, str(exc) or type(exc).__name__)
    return exc


def send_request(
    pool: ConnectionPool,
    destination: Destination,
    headers: dict[str, str],
    timeouts: Timeouts,
    deadline: float,
) -> Response:
    """Send a GET and wait for the response headers (reusing an idle connection if one is kept)."""
    reused = pool.take(destination)
    for connection in ([reused] if reused is not None else []) + [None]:
        fresh = connection is None
        if fresh:
            connection = _pinned_connection(destination, timeouts.connect_s)
        try:
            if connection.sock is None:
                connection.connect()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DownloadFailure(TIMEOUT, "total time limit reached")
            connection.sock.settimeout(min(timeouts.read_s, remaining))
            connection.request("GET", destination.path, headers=headers)
            response = connection.getresponse()
        except BaseException as exc:  # noqa: BLE001 - hang up whatever happened; re-raised below
            connection.close()
            stale_keep_alive = not fresh and isinstance(
                exc, (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)
            )
            if stale_keep_alive:
                continue  # the server closed an idle connection; that is not the URL's fault
            raise translate_network_error(exc) from None
        return Response(destination, connection, response, pool, deadline, timeouts.read_s)
    raise AssertionError("unreachable: a fresh connection either answers or raises")
