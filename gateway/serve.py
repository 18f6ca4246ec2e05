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

With ``service.enable_tls`` the TCP listener speaks TLS (``tls_context``; the
control process's Unix socket for HTTP workers stays plain: only this user's
processes reach it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_runner import BaseSite

from gateway.settings import ConfigError

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


def over_unix_socket(request: web.Request) -> bool:
    """Whether ``request`` came over one of the server's Unix sockets (the control
    process's, or a worker's: internal, reached only by this user's processes)."""
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


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
                 reuse_port: bool = False, backlog: int = 128, ssl_context: ssl.SSLContext | None = None):
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host, self._port = host, port
        self._max_connections = max_connections
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            _Limited(server, self._max_connections), self._host, self._port, backlog=self._backlog,
            reuse_address=True, reuse_port=self._reuse_port, family=socket.AF_UNSPEC, ssl=self._ssl_context,
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


def tls_context(cert: Path, key: Path, ca_cert: Path | None = None, verify_client: bool = False) -> ssl.SSLContext:
    """The REST API's TLS (``service.enable_tls``): Python's server defaults
    (TLS 1.2 or newer, the system's cipher choice), the certificate chain and
    key, and with ``verify_client`` only clients whose certificate ``ca_cert``
    signed (Qdrant's ``verify_https_client_certificate``). A file that cannot be
    used is a ConfigError, one line."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.cert {cert} / tls.key {key}: {_tls_problem(exc)}") from None
    if verify_client:
        try:
            context.load_verify_locations(cafile=ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls.ca_cert {ca_cert}: {_tls_problem(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _tls_problem(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM certificate and key ({exc.reason or exc})"
    return getattr(exc, "strerror", None) or str(exc)


def run(app: web.Application, *, host: str, port: int, max_connections: int, reuse_port: bool = False,
        unix_path: str | None = None, shutdown_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut it down gracefully (its
    cleanup contexts run), as ``web.run_app`` does."""
    loop = uvloop.new_event_loop()  # several times cheaper sockets and callbacks than asyncio's loop
    runner = web.AppRunner(app, handle_signals=True, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT,
                           shutdown_timeout=shutdown_timeout)
    sites: list[Any] = [lambda r: LimitedTCPSite(r, host, port, max_connections=max_connections,
                                                 reuse_port=reuse_port, ssl_context=ssl_context)]
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
