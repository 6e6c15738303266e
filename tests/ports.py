"""Ports for tests that run beside each other (pytest-xdist workers, replica processes).

Asking the OS for a free port, closing it and using its number later is a race: another test's server
may be handed the same port in between (CI once saw a replica's /healthz answered 404 by a stranger).
So a port is either held by a socket for as long as it is needed, or left for the server itself to
pick (PORT=0) and read back afterwards.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator


def bound_socket() -> socket.socket:
    """A socket bound to a fresh port on 127.0.0.1, for ``web.SockSite``: the port is known before the
    server starts, and nobody else can take it meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole block: bound (so no other server gets
    it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
