"""The bot's own HTTP server (/healthz, /metrics, /slack/events, /discord/interactions, the upstream
webhook), built to face hostile clients on the open internet: a header timeout, a connection cap, our
own accept loop and one throttled line per malformed request. The defences and why:
docs/architecture.md, "The HTTP server".
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from bot.inbound import LogThrottle

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 5.0  # seconds for a request's head to arrive; also how long an idle connection is kept
LINGER = 2.0  # seconds an unread body is drained after the answer (so the client reads the answer)
MAX_CONNECTIONS = 1000
MAX_BODY = 256 * 1024  # no endpoint takes a larger body (each reads its own, smaller or equal, cap)
LISTEN_BACKLOG = 1024  # a burst of Slack requests must not overflow it (SYN retries take 1 s)
ACCEPT_PAUSE = 0.5  # seconds between accept attempts while the process has no descriptor to spare
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def connection_cap(configured: int = MAX_CONNECTIONS) -> int:
    """``configured``, but at most half the open-file limit: the other half is for the database, the
    outgoing HTTP sessions, the log and the rest."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Unix
        return configured
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return configured
    return max(8, min(configured, soft // 2))


class _Connection(RequestHandler):
    """aiohttp's per-connection protocol, with its error logging condensed (see the module docstring)."""

    def __init__(self, manager: Any, *, owner: "HttpServer", **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._owner = owner
        self.evicted = False

    @property
    def evictable(self) -> bool:
        """No request is in progress or queued: it has sent nothing yet, or is waiting for (the rest
        of) a request's head."""
        if self.evicted or self.transport is None:
            return False
        if self._request_count == 0:
            return True
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._manager is not None:  # the first call only
            self._owner._closed()
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        peer = request.remote or "?"
        if isinstance(exc, HttpProcessingError):
            self._owner.throttle(f"malformed {type(exc).__name__}", logging.INFO,
                                 "malformed HTTP request from %s refused with %d (%s)", peer, status, type(exc).__name__)
        elif isinstance(exc, ConnectionError):
            self._owner.throttle("hung up", logging.INFO, "an HTTP client (%s) hung up mid-request", peer)
        elif exc is None:  # 504: a handler's own timeout
            self._owner.throttle(f"status {status}", logging.WARNING, "HTTP %s %s answered %d",
                                 request.method, _route(request), status)
        else:  # a bug in a handler: its traceback, and the route's pattern (never the path: it may hold a secret)
            log.error("HTTP %s %s failed", request.method, _route(request), exc_info=exc)
        if request.writer.output_size > 0:  # the answer had begun: the connection is broken
            raise ConnectionError("the response had already begun")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        response = web.Response(status=status, text=f"{status} {phrase}\n")
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, ConnectionError):
            self._owner.throttle("hung up", logging.INFO, "an HTTP client hung up mid-request")
        elif isinstance(exc, BaseException):
            log.error("HTTP server: %s", type(exc).__name__, exc_info=exc)
        else:
            log.error("HTTP server: %s", args[0] if args else "error")


def _route(request: Any) -> str:
    """The route's pattern (``/upstream/webhook/{secret}``), never the request's path."""
    try:
        return str(request.match_info.route.resource.canonical)
    except AttributeError:
        return "(no route)"


class _Site(web.BaseSite):
    """Registers our accept loops with the runner, so ``runner.cleanup()`` stops them first."""

    def __init__(self, runner: web.AppRunner, server: "HttpServer") -> None:
        super().__init__(runner)
        self._owner = server

    @property
    def name(self) -> str:
        return self._owner.url

    async def start(self) -> None:
        await super().start()

    async def stop(self) -> None:
        await self._owner._stop_accepting()
        await super().stop()


class HttpServer:
    """``start()`` binds and serves ``app``, returning the port; ``stop()`` closes everything."""

    def __init__(self, app: web.Application, host: str, port: int, *, max_connections: int | None = None,
                 header_timeout: float = HEADER_TIMEOUT, backlog: int = LISTEN_BACKLOG,
                 shutdown_timeout: float = 5.0) -> None:
        self.host, self.port = host, port
        self.max_connections = max_connections or connection_cap()
        self._backlog = backlog
        self.throttle = LogThrottle(log)
        # handler_args: the head timeout (keep-alive timer), a short drain of unread bodies, bodies
        # passed as sent (a compressed body would otherwise be inflated past any cap), and a smaller
        # buffer per request body (16 KiB, aiohttp's is 64: reading pauses at twice that): no body
        # here is larger than a few KiB, and a flood of large ones holds less
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout,
                                     keepalive_timeout=header_timeout, lingering_time=LINGER,
                                     auto_decompress=False, read_bufsize=16384)
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self._open = 0  # connections accepted and not yet closed
        self._previous_handler: Any = None
        self._protocol: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return self._open

    async def start(self) -> int:
        """Raises OSError when the address cannot be bound (after closing what was opened)."""
        await self._runner.setup()
        try:
            self._sockets = _listen(self.host, self.port, self._backlog)
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = self._sockets[0].getsockname()[1]
        loop = self._loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        server = self._runner.server
        assert server is not None
        kwargs = dict(getattr(server, "_kwargs", {}))  # what the runner gives aiohttp's own handlers

        def protocol() -> _Connection:
            return _Connection(server, owner=self, loop=loop, **kwargs)

        self._protocol = protocol
        site = _Site(self._runner, self)
        await site.start()
        self._accepting = [loop.create_task(self._accept(sock)) for sock in self._sockets]
        return int(self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()  # stops accepting (the site), then closes the connections
        if self._loop is not None and self._loop.get_exception_handler() == self._loop_exception:
            self._loop.set_exception_handler(self._previous_handler)

    async def _stop_accepting(self) -> None:
        for task in self._accepting:
            task.cancel()
        for task in list(self._connecting):
            task.cancel()
        await asyncio.gather(*self._accepting, *self._connecting, return_exceptions=True)
        self._accepting = []
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    # --- accepting ------------------------------------------------------------------------------
    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self.throttle("accept", logging.WARNING, "cannot accept HTTP connections: %s (%d open); "
                                  "closing idle ones", exc.strerror or type(exc).__name__, self._open)
                    if not await self._evict():
                        await asyncio.sleep(ACCEPT_PAUSE)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN):
                    self.throttle("accept other", logging.WARNING, "accepting an HTTP connection failed: %s",
                                  exc.strerror or type(exc).__name__)
                    await asyncio.sleep(0.1)
                continue
            if self._open >= self.max_connections:
                if self._connecting:  # accepted a moment ago: once registered, they can be weighed too
                    await asyncio.wait(list(self._connecting))
            if self._open >= self.max_connections:
                if not await self._evict():
                    self._refuse(conn)
                    continue
                self.throttle("evicted", logging.WARNING, "%d HTTP connections open (the cap): the oldest one "
                              "without a request in progress was closed for a new one", self.max_connections)
            self._open += 1
            task = loop.create_task(self._connect(conn, addr))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(self._protocol, conn)
        except BaseException:
            self._open -= 1  # the protocol never saw the connection
            conn.close()
            raise

    async def _evict(self) -> bool:
        """Close the oldest connection with no request in progress; True if there was one (and its
        descriptor is free by the time this returns)."""
        server = self._runner.server
        for handler in server.connections if server is not None else ():
            if isinstance(handler, _Connection) and handler.evictable:
                handler.evicted = True
                handler.force_close()
                await asyncio.sleep(0)  # the transport closes its socket on the next turn of the loop
                return True
        return False

    def _refuse(self, conn: socket.socket) -> None:
        self.throttle("full", logging.WARNING, "HTTP connection refused: %d connections open, all busy "
                      "(the cap is %d)", self._open, self.max_connections)
        try:
            conn.send(_REFUSED)
        except OSError:
            pass
        conn.close()

    def _closed(self) -> None:
        self._open -= 1

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Another server in the process (the built-in simulated upstream) out of descriptors: one line
        a minute, not one per accept attempt."""
        if context.get("message") == "socket.accept() out of system resource":
            exc = context.get("exception")
            self.throttle("loop accept", logging.WARNING, "a local server cannot accept connections: %s",
                          getattr(exc, "strerror", None) or type(exc).__name__)
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)


def _listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host`` (every address it resolves to), as asyncio's create_server would."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
