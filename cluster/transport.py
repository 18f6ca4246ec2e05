"""The fast hop between gateway and shard: sockets the shard actor hosts.

A Ray actor call costs milliseconds per request; that hop, not the search,
would decide Shoal's speed. So each shard actor also serves its ``LocalShard``
over a Unix socket (Linux abstract namespace: no file, no path length limit),
which a gateway on the same machine uses directly, and, given a secret, over
TCP for gateways on other machines. Ray still places, starts and restarts the
actor.

Both carry the same frames (``cluster.wire``): requests ``(id, method, args,
kwargs)``, answers ``(id, ok, result_or_exception)``, pickled (what Ray itself
would send). The Unix socket serves only this user's processes; TCP serves only
peers that proved they know the secret, and every TCP frame is authenticated
before it is unpickled; with ``encrypt`` (``service.enable_tls``) TCP frames
are also encrypted (``cluster.wire`` says how).

Concurrent searches are batched: while the shard works on one batch, newly
arrived searches queue, and the next round scores them in one ``search_batch``
call (one multi-query graph search), so throughput grows with load instead of
queueing behind per-call overhead. An idle shard answers a lone search at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cluster import wire

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0  # seconds a TCP peer has to prove itself; then it is dropped
MAX_HANDSHAKES = 64  # TCP connections proving themselves at once; more are dropped at once
_WILDCARDS = ("", "0.0.0.0", "::")


def machine_identity() -> str:
    """Processes that can reach each other's abstract Unix sockets share a kernel
    and a network namespace (abstract names are scoped by it): same boot id, same
    network namespace (its inode; a pod, a container, an ``ip netns`` each have
    their own), same host name."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "unknown"
    try:
        netns = str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        netns = "unknown"
    return f"{socket.gethostname()}/{boot}/{netns}"


@dataclass(frozen=True)
class Endpoints:
    """Where a shard is served: ``unix`` for a gateway on ``machine`` (compare
    with ``machine_identity()``), ``tcp`` (host, port) for any other, or None
    when the shard has no TCP listener."""

    machine: str
    unix: str
    tcp: tuple[str, int] | None = None


class ShardServer:
    """Serves one shard's methods on a Unix socket, and on TCP when given a secret.

    One thread per connection (a gateway keeps one connection per shard): it
    blocks for a request, then takes every further request already waiting in
    the socket without blocking, scores half of the waiting searches as one
    batch, and sends their answers in one write. Natural batching: no added
    latency when idle, bigger batches under load, and no thread hand-off on the
    search path. Half, not all: measured at 32 clients on 100k vectors, rounds
    of everything kept the gateway and the shard taking turns (~2,200 req/s);
    halves let them overlap (~2,700 req/s). Other calls (writes, retrieves, …)
    run on a small pool so that a large upsert does not hold searches up; their
    answers share the connection under a lock.

    TCP: ``tcp_host`` and ``tcp_port`` (0: any free port) to bind, ``secret``
    (bytes, see ``cluster.wire``) required with them; ``advertise_host`` is the
    host other machines should dial, by default ``tcp_host`` (a wildcard bind
    needs one); ``encrypt``: TCP connections are encrypted too (the clients
    follow the server's choice, proved in the handshake).
    """

    def __init__(
        self,
        shard: Any,
        workers: int = 4,
        *,
        secret: bytes | None = None,
        tcp_host: str | None = None,
        tcp_port: int = 0,
        advertise_host: str | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        encrypt: bool = False,
    ):
        if tcp_host is not None:
            if secret is None:
                raise ValueError("a shard's TCP listener needs a secret: its frames are pickles")
            wire.check_secret(secret)
            if tcp_host in _WILDCARDS and not advertise_host:
                raise ValueError(f"a shard listening on {tcp_host!r} needs the host other machines should dial")
        self.shard = shard
        self.address = f"\0shoal-{uuid.uuid4().hex}"
        self.tcp_address: tuple[str, int] | None = None
        self._secret = secret
        self._encrypt = encrypt
        self._handshake_timeout = handshake_timeout
        self._handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self._calls = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard-call")
        self._connections: set[socket.socket] = set()
        self._closed = False
        self._listeners = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)]
        self._listeners[0].bind(self.address)
        self._listeners[0].listen(64)
        threading.Thread(target=self._accept_unix, name="shard-accept", daemon=True).start()
        if tcp_host is not None:
            family = socket.getaddrinfo(tcp_host, tcp_port, type=socket.SOCK_STREAM)[0][0]
            listener = socket.create_server((tcp_host, tcp_port), family=family, backlog=64)
            self._listeners.append(listener)
            self.tcp_address = (advertise_host or tcp_host, listener.getsockname()[1])
            threading.Thread(target=self._accept_tcp, args=(listener,), name="shard-accept-tcp", daemon=True).start()

    def endpoints(self) -> Endpoints:
        return Endpoints(machine_identity(), self.address, self.tcp_address)

    def _accept_unix(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listeners[0].accept()
            except OSError:
                return
            if not _same_user(conn):
                # An abstract socket has no file permissions: any local user could
                # connect, and frames are pickles. Only this user's processes may.
                log.warning("shard socket: refused a connection from another user")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, wire.PLAIN), name="shard-conn", daemon=True).start()

    def _accept_tcp(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            if not self._handshakes.acquire(blocking=False):
                log.warning("shard TCP: %d connections already proving themselves; dropped %s", MAX_HANDSHAKES, peer)
                conn.close()
                continue
            threading.Thread(target=self._serve_tcp, args=(conn, peer), name="shard-conn-tcp", daemon=True).start()

    def _serve_tcp(self, conn: socket.socket, peer) -> None:
        try:
            _tune_tcp(conn)
            framing = _prove(conn, wire.ServerHandshake(self._secret, self._encrypt), self._handshake_timeout)
        except OSError as exc:  # HandshakeFailed is a ConnectionError; a stall, a timeout
            log.warning("shard TCP: refused %s: %s", peer, exc)
            conn.close()
            return
        finally:
            self._handshakes.release()
        self._serve(conn, framing)

    def _serve(self, conn: socket.socket, framing) -> None:
        self._connections.add(conn)
        inbox = _FrameReader(conn, framing)
        send_lock = threading.Lock()

        def send(frames: list[bytes]) -> None:
            with send_lock:  # sealed in the order written: SealedFraming counts them
                conn.sendall(framing.seal(frames))

        queued: list[tuple] = []  # searches waiting for a round
        try:
            while not self._closed:
                requests = inbox.read(block=not queued) + inbox.read(block=False)
                for request in requests:
                    if request[1] == "search_batch":
                        queued.append(request)
                    else:
                        self._calls.submit(self._call, request, send)
                if queued:
                    # Score half of what waits (at least one) and answer it: the
                    # gateway turns those answers into responses while this thread
                    # scores the other half, instead of each waiting for the other.
                    n = (len(queued) + 1) // 2
                    searches, queued = queued[:n], queued[n:]
                    send(self._search(searches))
        except wire.FrameRejected as exc:
            log.warning("shard TCP: refused a frame (%s); connection closed", exc)
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(conn)
            conn.close()

    def _call(self, request: tuple, send) -> None:
        req_id, method, args, kwargs = request
        try:
            answer = (req_id, True, getattr(self.shard, method)(*args, **kwargs))
        except Exception as exc:  # the caller re-raises it
            answer = (req_id, False, exc)
        try:
            send([wire.answer_frame(answer)])
        except OSError:
            pass  # the gateway went away; it will retry or report

    def _search(self, searches: list[tuple]) -> list[bytes]:
        """Answer frames for a round of search_batch requests, scored together."""
        batches = [(req_id, wire.searches_from_wire(args[0])) for req_id, _, args, _ in searches]
        try:
            results = self.shard.search_batch([r for _, batch in batches for r in batch])
        except Exception:
            # One bad request must not fail its neighbours: score them one by one.
            frames = []
            for req_id, batch in batches:
                try:
                    frames.append(wire.answer_frame((req_id, True, wire.hits_to_wire(self.shard.search_batch(batch)))))
                except Exception as exc:
                    frames.append(wire.answer_frame((req_id, False, exc)))
            return frames
        frames, at = [], 0
        for req_id, batch in batches:
            frames.append(wire.answer_frame((req_id, True, wire.hits_to_wire(results[at : at + len(batch)]))))
            at += len(batch)
        return frames

    def close(self) -> None:
        """Stop listening and drop every connection (their gateways see them close)."""
        self._closed = True
        for sock in self._listeners + list(self._connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept or recv
            except OSError:
                pass
        for listener in self._listeners:
            listener.close()
        self._calls.shutdown(wait=False)


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _same_user(conn: socket.socket) -> bool:
    """Whether the peer of a Unix socket runs as this process's user (or root)."""
    _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid in (os.getuid(), 0)


def _tune_tcp(sock) -> None:
    """No Nagle delay on small frames; keepalives, so that a connection whose
    peer machine vanished is noticed in about a minute instead of never."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _prove(conn: socket.socket, handshake: wire.ServerHandshake, timeout: float):
    """Run the server's side of the handshake on a blocking socket, all of it
    within ``timeout`` seconds. Reads exactly the handshake's bytes, never more."""
    deadline = time.monotonic() + timeout

    def receive(size: int) -> bytes:
        data = b""
        while len(data) < size:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise wire.HandshakeFailed("closed during the handshake")
            data += chunk
        return data

    try:
        conn.sendall(handshake.reply(receive(wire.HELLO_SIZE)))
        framing = handshake.finish(receive(wire.PROOF))
    except TimeoutError:
        raise wire.HandshakeFailed(f"no handshake within {timeout:g} s") from None
    conn.settimeout(None)
    return framing


class _FrameReader:
    """Reads whole frames from a blocking socket; ``block=False`` returns only
    what has already arrived."""

    def __init__(self, conn: socket.socket, framing):
        self.conn = conn
        self.framing = framing
        self.buffer = bytearray()

    def read(self, block: bool) -> list[tuple]:
        frames = self.framing.take(self.buffer)
        if frames and block:
            return frames
        while True:
            try:
                chunk = self.conn.recv(1 << 20, 0 if block else socket.MSG_DONTWAIT)
            except BlockingIOError:
                return frames
            if not chunk:
                raise ConnectionError("peer closed")
            self.buffer += chunk
            frames += self.framing.take(self.buffer)
            if block and frames:
                return frames
            if not block and len(chunk) < (1 << 20):
                return frames


class BlockingChannel:
    """One shard's socket for a thread: a call at a time, answered in order. What a
    primary's replication links use (``cluster.replicator``); the gateway, which
    multiplexes, uses ShardChannel."""

    def __init__(self, conn: socket.socket, framing):
        self._conn = conn
        self._framing = framing
        self._reader = _FrameReader(conn, framing)
        self._ids = itertools.count()

    @classmethod
    def connect(cls, endpoints: Endpoints, secret: bytes | None, timeout: float = HANDSHAKE_TIMEOUT) -> BlockingChannel:
        """To the shard's Unix socket if it runs on this machine, else to its TCP
        listener once each side proved it knows ``secret``. ConnectionError when
        neither can be reached."""
        if endpoints.machine == machine_identity():
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.settimeout(timeout)
                conn.connect(endpoints.unix)
                conn.settimeout(None)
            except OSError:
                conn.close()
                raise
            return cls(conn, wire.PLAIN)
        if endpoints.tcp is None or secret is None:
            raise ConnectionError("the shard is on another machine and no TCP listener or secret is known for it")
        handshake = wire.ClientHandshake(secret)
        try:
            conn = socket.create_connection(endpoints.tcp, timeout=timeout)
        except OSError as exc:
            raise ConnectionError(f"shard at {endpoints.tcp[0]}:{endpoints.tcp[1]}: {exc}") from None
        try:
            _tune_tcp(conn)
            conn.sendall(handshake.hello())
            reply = b""
            while len(reply) < wire.REPLY_SIZE:
                chunk = conn.recv(wire.REPLY_SIZE - len(reply))
                if not chunk:
                    raise wire.HandshakeFailed("closed during the handshake")
                reply += chunk
            proof, framing = handshake.finish(reply)
            conn.sendall(proof)
            conn.settimeout(None)
        except (OSError, TimeoutError) as exc:
            conn.close()
            raise ConnectionError(f"shard at {endpoints.tcp[0]}:{endpoints.tcp[1]}: {exc}") from None
        return cls(conn, framing)

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Send one request and wait for its answer (``timeout`` seconds, then
        TimeoutError: the channel is then unusable, close it). The shard's own
        exception is re-raised as itself."""
        req_id = next(self._ids)
        self._conn.settimeout(timeout)
        try:
            self._conn.sendall(self._framing.seal([wire.frame((req_id, method, args, kwargs))]))
            while True:
                for answer_id, ok, result in self._reader.read(block=True):
                    if answer_id == req_id:
                        if not ok:
                            raise result
                        return result
        except socket.timeout:
            raise TimeoutError(f"no answer to {method} within {timeout:g} s") from None

    def close(self) -> None:
        try:
            self._conn.close()
        except OSError:
            pass


class ShardChannel:
    """The gateway's end: many concurrent calls multiplexed on one connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing=wire.PLAIN):
        self._reader, self._writer = reader, writer
        self._framing = framing
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future] = {}
        self._reading = asyncio.create_task(self._read_answers())
        self._outbox: list[bytes] = []
        self.closed = False

    @classmethod
    async def connect(cls, address: str) -> ShardChannel:
        """To a shard's Unix socket (this machine)."""
        # Connect by hand: uvloop rejects abstract-namespace names given as a path.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**26)
        return cls(reader, writer)

    @classmethod
    async def connect_tcp(cls, host: str, port: int, secret: bytes,
                          timeout: float = HANDSHAKE_TIMEOUT) -> ShardChannel:
        """To a shard's TCP listener (any machine), once each side has proved it
        knows ``secret``; a failure of any kind is a ConnectionError."""
        handshake = wire.ClientHandshake(secret)
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=2**26)
                _tune_tcp(writer.get_extra_info("socket"))
                writer.write(handshake.hello())
                proof, framing = handshake.finish(await reader.readexactly(wire.REPLY_SIZE))
                writer.write(proof)
        except (OSError, asyncio.IncompleteReadError) as exc:  # TimeoutError and HandshakeFailed are OSErrors
            if writer is not None:
                writer.close()
            if isinstance(exc, ConnectionError):
                raise
            raise ConnectionError(f"shard at {host}:{port}: {str(exc) or type(exc).__name__}") from None
        return cls(reader, writer, framing)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise ConnectionError("shard channel closed")
        req_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = future
        if not self._outbox:
            # Requests made in the same loop iteration leave in one write, and
            # reach the shard together, which then scores them as one batch.
            asyncio.get_running_loop().call_soon(self._flush)
        if method == "search_batch":
            args = (wire.searches_to_wire(args[0]),)
        self._outbox.append(wire.frame((req_id, method, args, kwargs)))
        ok, result = await future
        if not ok:
            raise result
        return wire.hits_from_wire(result) if method == "search_batch" else result

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if not self.closed:
            self._writer.write(self._framing.seal(frames))

    async def _read_answers(self) -> None:
        buffer = bytearray()
        try:
            while True:
                # Answers come a round at a time: take all that has arrived at once.
                chunk = await self._reader.read(1 << 20)
                if not chunk:
                    raise ConnectionError("the shard closed the connection")
                buffer += chunk
                for req_id, ok, result in self._framing.take(buffer):
                    future = self._waiting.pop(req_id, None)
                    if future is not None and not future.done():
                        future.set_result((ok, result))
        except (ConnectionError, OSError) as exc:  # FrameRejected too: the connection is dropped
            self._fail(ConnectionError(f"shard connection lost: {exc}"))
            self._writer.close()
        except asyncio.CancelledError:
            self._fail(ConnectionError("shard channel closed"))
            raise

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(exc)
        self._waiting.clear()

    def close(self) -> None:
        self.closed = True
        self._reading.cancel()
        self._writer.close()
