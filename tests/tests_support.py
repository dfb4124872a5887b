"""Small helpers shared by test modules (pytest puts tests/ on sys.path through conftest)."""

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
