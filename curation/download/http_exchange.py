"""One HTTP request to an address we already checked, with its body read under limits.

`http.client` on a socket connected to the pinned IP (TLS still verifies the host name), kept
alive per worker thread and per destination. The response headers are available before any body
byte is read, so opt-out headers and oversized `Content-Length` cost no transfer; the body is read
in chunks under a byte limit, and the first bytes can be inspected (content sniffing) before the
rest is fetched.

One deadline covers the whole request (connect, TLS handshake, headers, body): the socket itself
waits at most min(read timeout, time left) on every receive and send, so a server that trickles
its headers or body a byte at a time (each receive returning, none timing out) is cut off at the
deadline instead of holding a worker thread, and with it the shard, for as long as it likes.
"""

from __future__ import annotations

import http.client
import math
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


class _Deadline:
    """Bounds every blocking call of a socket by min(read timeout, time left before the deadline).

    http.client reads through a buffered file that loops on `recv_into` until it has what it asked
    for, so a per-call socket timeout alone never fires against a server sending a byte a second.
    """

    deadline: float = math.inf
    read_timeout: float | None = None

    def arm(self, deadline: float, read_timeout: float) -> None:
        self.deadline, self.read_timeout = deadline, read_timeout

    def _wait_at_most(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("total time limit reached")
        limit = remaining if self.read_timeout is None else min(self.read_timeout, remaining)
        self.settimeout(None if math.isinf(limit) else limit)  # type: ignore[attr-defined]

    def recv_into(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._wait_at_most()
        return super().recv_into(*args, **kwargs)  # type: ignore[misc]

    def recv(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._wait_at_most()
        return super().recv(*args, **kwargs)  # type: ignore[misc]

    def sendall(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._wait_at_most()
        return super().sendall(*args, **kwargs)  # type: ignore[misc]


class _DeadlineSocket(_Deadline, socket.socket):
    pass


class _DeadlineSSLSocket(_Deadline, ssl.SSLSocket):
    pass


_tls_context: ssl.SSLContext | None = None


def _deadline_tls_context() -> ssl.SSLContext:
    """The default verifying context, making SSL sockets that keep the request's deadline."""
    global _tls_context
    if _tls_context is None:
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        _tls_context = context
    return _tls_context


def _pinned_connection(
    destination: Destination, timeouts: Timeouts, deadline: float
) -> http.client.HTTPConnection:
    def connect_to_checked_address(address, timeout, source_address=None):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("total time limit reached before connecting")
        wait = min(timeouts.connect_s, remaining)
        plain = socket.create_connection(
            (str(destination.address), address[1]), wait, source_address
        )
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.settimeout(wait)  # bounds the TLS handshake that may follow
        sock.arm(deadline, timeouts.connect_s)
        return sock

    if destination.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            destination.host,
            destination.port,
            timeout=timeouts.connect_s,
            context=_deadline_tls_context(),
        )
    else:
        connection = http.client.HTTPConnection(
            destination.host, destination.port, timeout=timeouts.connect_s
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
    ):
        self.destination = destination
        self.status = response.status
        self.headers: Message = response.msg
        self.bytes_read = 0
        self._connection = connection
        self._response = response
        self._pool = pool

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
            connection = _pinned_connection(destination, timeouts, deadline)
        try:
            if connection.sock is None:
                connection.connect()
            connection.sock.arm(deadline, timeouts.read_s)
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
        return Response(destination, connection, response, pool)
    raise AssertionError("unreachable: a fresh connection either answers or raises")
