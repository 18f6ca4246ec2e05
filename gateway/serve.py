"""Running the aiohttp application: ``aiohttp.web.run_app``'s loop, plus a bound
on open connections.

aiohttp has no limit on how many connections a server keeps open, and each one
costs a socket, buffers and a task. Past ``service.max_connections`` a new
connection is answered at once with 503 (Qdrant's error JSON) and closed, so
that a flood of clients, or of connections left half-open, cannot take the
server's file descriptors and memory. Idle connections and requests whose
headers never finish are closed after ``KEEPALIVE_TIMEOUT`` (aiohttp's keep-alive
timer runs from the moment a connection opens); bodies that never finish are
the routes' concern (``service.body_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import orjson
import uvloop
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_runner import BaseSite

KEEPALIVE_TIMEOUT = 75.0  # seconds: run_app's default


class MalformedHttpFilter(logging.Filter):
    """aiohttp logs every malformed request (a bad header byte, a broken request
    line) with a full traceback at ERROR; it is the client's fault, not the
    server's: make it one WARNING line, and keep tracebacks for real faults."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "a client"
            record.msg, record.args = "malformed HTTP request from %s: %s", (peer, _one_line(exc))
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def quiet_malformed_http() -> None:
    logging.getLogger("aiohttp.server").addFilter(MalformedHttpFilter())


class _Refusal(asyncio.Protocol):
    """Answers one connection past the limit with 503 and closes it."""

    def __init__(self, limit: int):
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = orjson.dumps({"status": {"error": f"Service unavailable: more than {self.limit} open connections "
                                                "(setting service.max_connections); retry later"}, "time": 0.0})
        head = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        transport.write(head + body)  # type: ignore[attr-defined]
        transport.close()


class _Limited:
    """The server's protocol factory while fewer than ``limit`` connections are open."""

    def __init__(self, server: web.Server, limit: int):
        self.server = server
        self.limit = limit

    def __call__(self) -> asyncio.Protocol:
        if len(self.server.connections) >= self.limit:
            return _Refusal(self.limit)
        return self.server()


class LimitedTCPSite(BaseSite):
    """``web.TCPSite`` with a bound on open connections."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int,
                 reuse_port: bool = False, backlog: int = 128):
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self._max_connections = max_connections
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            _Limited(server, self._max_connections), self._host, self._port, backlog=self._backlog,
            reuse_address=True, reuse_port=self._reuse_port, family=socket.AF_UNSPEC,
        )


async def _serve(runner: web.AppRunner, sites: list[Any]) -> None:
    await runner.setup()
    try:
        for make in sites:
            await make(runner).start()
        while True:  # until a signal ends the loop (GracefulExit)
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def run(app: web.Application, *, host: str, port: int, max_connections: int, reuse_port: bool = False,
        unix_path: str | None = None, shutdown_timeout: float = 10.0) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut it down gracefully (its
    cleanup contexts run), as ``web.run_app`` does."""
    loop = uvloop.new_event_loop()  # several times cheaper sockets and callbacks than asyncio's loop
    runner = web.AppRunner(app, handle_signals=True, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT,
                           shutdown_timeout=shutdown_timeout)
    sites: list[Any] = [lambda r: LimitedTCPSite(r, host, port, max_connections=max_connections,
                                                 reuse_port=reuse_port)]
    if unix_path is not None:
        sites.append(lambda r: web.UnixSite(r, unix_path))
    main = loop.create_task(_serve(runner, sites))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
