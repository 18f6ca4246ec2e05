"""The shard socket over TCP: same answers as the Unix socket, and nothing
unauthenticated, tampered, replayed or reordered is ever unpickled or applied.

Real sockets, a real ``LocalShard`` in a temporary folder, the real server in
this process (its threads). Attacks are made by hand on raw sockets, or by a
small proxy that sees whole frames in flight. "Nothing unpickled" is proved
with a pickle whose loading creates a marker file; one test shows that the same
pickle, properly authenticated, does create it, so the marker can tell.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cluster import wire
from cluster.actor import ShardActor
from cluster.transport import ShardChannel, ShardServer
from shard.local_shard import LocalShard
from shard.types import (
    Distance,
    NearestQuery,
    PayloadSelector,
    SearchRequest,
    ShardConfig,
    VectorParams,
)

DIM = 16
SECRET = b"s" * 32
HANDSHAKE_TIMEOUT = 0.5
CONFIG = ShardConfig(vectors={"": VectorParams(DIM, Distance.COSINE)})


def run(coro, timeout: float = 30):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def upsert(ids, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "type": "upsert",
        "ids": list(ids),
        "vectors": {"": rng.normal(size=(len(ids), DIM)).astype(np.float32)},
        "payloads": [{"n": i, "colour": ("red", "green", "blue")[i % 3]} for i in ids],
    }


@pytest.fixture
def shard(tmp_path):
    shard = LocalShard(tmp_path / "shard", CONFIG, background_indexing=False)
    shard.apply(upsert(range(300)))
    shard.apply({"type": "create_index", "field": "colour", "schema": "keyword"})
    yield shard
    shard.close(take_snapshot=False)


@pytest.fixture
def server(shard):
    server = ShardServer(shard, secret=SECRET, tcp_host="127.0.0.1", handshake_timeout=HANDSHAKE_TIMEOUT)
    yield server
    server.close()


def plain(obj):
    """Answers in a comparable form: dataclasses as dicts, arrays as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def served(server: ShardServer) -> int:
    """One call over a fresh authenticated TCP connection: the server still serves."""

    async def go():
        channel = await ShardChannel.connect_tcp(*server.tcp_address, SECRET)
        try:
            return await channel.call("count", None)
        finally:
            channel.close()

    return run(go())


# ---------------------------------------------------------------- same answers


def test_tcp_answers_as_the_unix_socket(server, shard):
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(40, DIM)).astype(np.float32)
    searches = [
        [SearchRequest(NearestQuery(q), limit=7, with_payload=PayloadSelector(), with_vector=i % 2 == 0,
                       filter={"must": [{"key": "colour", "match": {"value": "red"}}]} if i % 3 == 0 else None)]
        for i, q in enumerate(queries)
    ]
    calls = [
        ("count", (None,), {}),
        ("count", ({"must": [{"key": "colour", "match": {"value": "blue"}}]},), {}),
        ("retrieve", ([5, 17, 9999], PayloadSelector(), True), {}),
        ("get_vectors", ([1, 2], ""), {}),
        ("scroll", (), dict(filter=None, offset=10, limit=20, order_by=None, with_payload=PayloadSelector(),
                            with_vector=False)),
        ("facet", ("colour", None, 10), {}),
        ("info", (), {}),
    ]

    async def answers(channel: ShardChannel) -> list:
        out = [await channel.call(method, *args, **kwargs) for method, args, kwargs in calls]
        # All at once: they leave in one write and are scored in batches.
        out.append(await asyncio.gather(*(channel.call("search_batch", s) for s in searches)))
        with pytest.raises(Exception) as error:  # a shard's own exception comes back as itself
            await channel.call("search_batch", [SearchRequest(NearestQuery(np.ones(DIM + 1, np.float32)))])
        out.append((type(error.value), str(error.value)))
        return out

    async def both():
        unix = await ShardChannel.connect(server.address)
        tcp = await ShardChannel.connect_tcp(*server.tcp_address, SECRET)
        try:
            over_unix = await answers(unix)
            rounds.clear()
            return over_unix, await answers(tcp)
        finally:
            unix.close()
            tcp.close()

    rounds = []
    search_batch = shard.search_batch
    shard.search_batch = lambda requests: (rounds.append(len(requests)), search_batch(requests))[1]
    over_unix, over_tcp = run(both())
    assert plain(over_tcp) == plain(over_unix)
    assert len(over_tcp[-2]) == 40 and all(len(hits) == 1 for hits in over_tcp[-2])
    assert max(rounds) > 1, rounds  # concurrent searches were scored together over TCP too


def test_writes_over_tcp_are_applied_once(server, shard):
    async def go():
        channel = await ShardChannel.connect_tcp(*server.tcp_address, SECRET)
        try:
            return await channel.call("apply", upsert([1000, 1001], seed=9), True)
        finally:
            channel.close()

    seq = shard.seq
    assert run(go()) == seq + 1
    assert shard.count(None) == 302


def test_closing_the_server_drops_tcp_connections(server):
    async def go():
        channel = await ShardChannel.connect_tcp(*server.tcp_address, SECRET)
        assert await channel.call("count", None) == 300
        await asyncio.sleep(0.2)  # an idle connection: its thread waits in recv
        server.close()
        while not channel.closed:  # seen without a call (bounded by run's timeout)
            await asyncio.sleep(0.01)
        with pytest.raises(ConnectionError):
            await channel.call("count", None)

    run(go())


@pytest.fixture
def blas_limits_restored():
    """ShardActor limits its process's BLAS threads (its process is its own);
    here the process is the test run's, so the limits are put back."""
    with threadpool_limits(limits=None):
        yield


def test_actor_listens_on_tcp_only_with_a_secret_and_a_host(tmp_path, blas_limits_restored):
    plain_actor = ShardActor(str(tmp_path / "a"), CONFIG.to_json(), {})
    assert plain_actor.endpoints().tcp is None
    assert plain_actor.endpoints().unix == plain_actor.endpoint()[1]
    plain_actor.close(take_snapshot=False)
    host_only = ShardActor(str(tmp_path / "b"), CONFIG.to_json(), {"tcp_host": "127.0.0.1"})
    assert host_only.endpoints().tcp is None
    host_only.close(take_snapshot=False)

    actor = ShardActor(str(tmp_path / "c"), CONFIG.to_json(), {"wire_secret": SECRET, "tcp_host": "127.0.0.1"})
    try:
        host, port = actor.endpoints().tcp
        assert host == "127.0.0.1" and port > 0

        async def go():
            channel = await ShardChannel.connect_tcp(host, port, SECRET)
            try:
                return await channel.call("count", None)
            finally:
                channel.close()

        assert run(go()) == 0
    finally:
        actor.close(take_snapshot=False)


def test_a_tcp_listener_needs_a_real_secret(shard):
    for secret in (None, b"short", "a text, not bytes"):
        with pytest.raises(ValueError):
            ShardServer(shard, secret=secret, tcp_host="127.0.0.1")
    with pytest.raises(ValueError):  # a wildcard bind must say what other machines dial
        ShardServer(shard, secret=SECRET, tcp_host="0.0.0.0")


# ------------------------------------------------- refused before any unpickling


class _Marker:
    """Unpickling this creates ``path``: the proof that a frame was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def marker_frame(path: Path) -> bytes:
    """A plain frame of a valid request (count(None)) whose loading creates ``path``."""
    return wire.frame((1, "count", (_Marker(path),), {}))


def proof(label: bytes, client_nonce: bytes, server_nonce: bytes, secret: bytes = SECRET) -> bytes:
    """The handshake's HMACs, written here from the protocol's description
    (cluster.wire), independently of its code."""
    return hmac.new(secret, label + client_nonce + server_nonce, hashlib.sha256).digest()


def tag(key: bytes, counter: int, frame: bytes) -> bytes:
    return hmac.new(key, struct.pack("<Q", counter) + frame, hashlib.sha256).digest()[:16]


def raw(server: ShardServer) -> socket.socket:
    sock = socket.create_connection(server.tcp_address, timeout=10)
    return sock


def closed_by_server(sock: socket.socket) -> tuple[bool, bytes]:
    """Whether the server closed the connection, and what it sent first."""
    received = b""
    try:
        while chunk := sock.recv(1 << 16):
            received += chunk
        return True, received
    except ConnectionResetError:
        return True, received
    except TimeoutError:
        return False, received
    finally:
        sock.close()


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


def test_the_marker_runs_when_authenticated(server, tmp_path):
    """The control: a client written from the protocol's description alone, that
    knows the secret, gets the marker frame unpickled and answered."""
    marker = tmp_path / "unpickled"
    sock = raw(server)
    client_nonce = secrets.token_bytes(32)
    sock.sendall(b"SHOALTC1" + client_nonce)
    reply = receive(sock, 64)
    server_nonce = reply[:32]
    assert hmac.compare_digest(reply[32:], proof(b"shoal tcp v1 server proof", client_nonce, server_nonce))
    to_server = proof(b"shoal tcp v1 key client->server", client_nonce, server_nonce)
    to_client = proof(b"shoal tcp v1 key server->client", client_nonce, server_nonce)
    frame = marker_frame(marker)
    sock.sendall(proof(b"shoal tcp v1 client proof", client_nonce, server_nonce) + frame + tag(to_server, 0, frame))
    (length,) = struct.unpack("<I", receive(sock, 4))
    answer = receive(sock, length + 16)
    assert answer[-16:] == tag(to_client, 0, struct.pack("<I", length) + answer[:-16])
    assert pickle.loads(answer[:-16]) == (1, True, 300)
    assert marker.exists()
    sock.close()


def _no_handshake(sock, frame):
    sock.sendall(frame)


def _garbage(sock, frame):
    sock.sendall(os.urandom(4096) + frame)


def _wrong_magic(sock, frame):
    sock.sendall(b"SHOALTC0" + secrets.token_bytes(32) + frame)


def _wrong_secret(sock, frame):
    nonce = secrets.token_bytes(32)
    sock.sendall(b"SHOALTC1" + nonce)
    server_nonce = receive(sock, 64)[:32]
    wrong = b"w" * 32
    key = proof(b"shoal tcp v1 key client->server", nonce, server_nonce, wrong)
    sock.sendall(proof(b"shoal tcp v1 client proof", nonce, server_nonce, wrong) + frame + tag(key, 0, frame))


def _wrong_proof(sock, frame):
    """A bad proof, then silence: refused at once, not left waiting for frames."""
    sock.sendall(b"SHOALTC1" + secrets.token_bytes(32))
    receive(sock, 64)
    sock.sendall(secrets.token_bytes(32))


def _bad_tag(sock, frame):
    """Knows the secret and proves it, then sends a frame whose tag is wrong
    (it is the tag of frame 1): refused before its pickle is read."""
    nonce = secrets.token_bytes(32)
    sock.sendall(b"SHOALTC1" + nonce)
    server_nonce = receive(sock, 64)[:32]
    key = proof(b"shoal tcp v1 key client->server", nonce, server_nonce)
    sock.sendall(proof(b"shoal tcp v1 client proof", nonce, server_nonce) + frame + tag(key, 1, frame))


def _frame_instead_of_proof(sock, frame):
    """Knows the secret, but sends a frame where its proof should be."""
    nonce = secrets.token_bytes(32)
    sock.sendall(b"SHOALTC1" + nonce)
    receive(sock, 64)
    sock.sendall(frame)


def _truncated_proof(sock, frame):
    nonce = secrets.token_bytes(32)
    sock.sendall(b"SHOALTC1" + nonce)
    server_nonce = receive(sock, 64)[:32]
    sock.sendall(proof(b"shoal tcp v1 client proof", nonce, server_nonce)[:16])
    sock.shutdown(socket.SHUT_WR)


def _truncated_hello(sock, frame):
    sock.sendall(b"SHOALTC1" + b"\0" * 10)
    sock.shutdown(socket.SHUT_WR)


def _stalled_hello(sock, frame):
    sock.sendall(b"SHOALTC1")  # ... and nothing more, the connection left open


def _stalled_proof(sock, frame):
    sock.sendall(b"SHOALTC1" + secrets.token_bytes(32))
    receive(sock, 64)  # ... and no proof


# Attacks that never send a whole hello: the server must not answer them at all
# (not even its proof, which a stranger has no use for).
SILENCED = {"_no_handshake", "_garbage", "_wrong_magic", "_truncated_hello", "_stalled_hello"}
ATTACKS = [_no_handshake, _garbage, _wrong_magic, _wrong_secret, _wrong_proof, _bad_tag, _frame_instead_of_proof,
           _truncated_proof, _truncated_hello, _stalled_hello, _stalled_proof]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__.strip("_"))
def test_unauthenticated_peers_are_refused_unread(server, tmp_path, attack, caplog):
    marker = tmp_path / "unpickled"
    sock = raw(server)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cluster.transport"):
        attack(sock, marker_frame(marker))
        closed, received = closed_by_server(sock)
    assert closed
    if attack.__name__ in SILENCED:
        assert received == b""
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 5
    assert not marker.exists()
    assert "refused" in caplog.text
    assert served(server) == 300


def test_stalled_peers_do_not_hold_up_others(shard):
    """Peers that stall in the handshake, with a timeout far longer than the
    test's bound (``run``, 30 s): others are served meanwhile."""
    patient = ShardServer(shard, secret=SECRET, tcp_host="127.0.0.1", handshake_timeout=120)
    stalled = [raw(patient) for _ in range(3)]
    try:
        for sock in stalled[1:]:
            sock.sendall(b"SHOAL")
        assert served(patient) == 300
    finally:
        for sock in stalled:
            sock.close()
        patient.close()


def test_a_client_refuses_a_server_without_the_secret(server):
    with pytest.raises(ConnectionError):
        run(ShardChannel.connect_tcp(*server.tcp_address, b"w" * 32))
    assert served(server) == 300


def test_a_client_gives_up_on_a_silent_server():
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            run(ShardChannel.connect_tcp(*silent.getsockname(), SECRET, timeout=0.3))
        assert time.monotonic() - started < 5
    finally:
        silent.close()


# ------------------------------------------------------ frames altered in flight


class FrameProxy:
    """A TCP proxy that lets the handshake through as it is, then hands every
    whole frame (``<u32 length><pickle><16-byte tag>``) to ``on_frame(direction,
    index, frame)``, which returns the bytes to forward instead."""

    def __init__(self, upstream: tuple[str, int], on_frame=None):
        self.upstream = upstream
        self.on_frame = on_frame or (lambda direction, index, frame: frame)
        self.frames: dict[str, list[bytes]] = {"to server": [], "to client": []}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for pair in ((client, upstream, "to server", wire.HELLO_SIZE + wire.PROOF),
                         (upstream, client, "to client", wire.REPLY_SIZE)):
                threading.Thread(target=self._pump, args=pair, daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str, handshake: int) -> None:
        buffer, index = bytearray(), 0
        try:
            while chunk := source.recv(1 << 16):
                buffer += chunk
                if handshake:
                    passed = bytes(buffer[:handshake])
                    sink.sendall(passed)
                    del buffer[: len(passed)]
                    handshake -= len(passed)
                while len(buffer) >= 4:
                    size = 4 + struct.unpack_from("<I", buffer)[0] + wire.TAG
                    if len(buffer) < size:
                        break
                    frame = bytes(buffer[:size])
                    del buffer[:size]
                    self.frames[direction].append(frame)
                    sink.sendall(self.on_frame(direction, index, frame))
                    index += 1
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def flip(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 0x01]) + frame[at + 1 :]


def through(proxy: FrameProxy, *calls: tuple) -> list:
    """Make ``calls`` (method, *args) one after the other over the proxy: each
    answer, or the ConnectionError it failed with."""

    async def go():
        channel = await ShardChannel.connect_tcp(*proxy.address, SECRET)
        out = []
        try:
            for method, *args in calls:
                try:
                    out.append(await channel.call(method, *args))
                except ConnectionError as exc:
                    out.append(exc)
        finally:
            channel.close()
        return out

    return run(go())


@pytest.mark.parametrize("where", ["pickle", "tag"])
def test_a_tampered_request_is_refused_and_not_applied(server, shard, where):
    def tamper(direction, index, frame):
        if direction == "to server" and index == 1:
            return flip(frame, len(frame) // 2 if where == "pickle" else len(frame) - 3)
        return frame

    proxy = FrameProxy(server.tcp_address, tamper)
    seq = shard.seq
    first, second, third = through(proxy, ("count", None), ("apply", upsert([1000]), True), ("count", None))
    assert first == 300
    assert isinstance(second, ConnectionError) and isinstance(third, ConnectionError)
    assert shard.seq == seq and shard.count(None) == 300  # nothing applied
    assert served(server) == 300
    proxy.close()


def test_a_tampered_answer_fails_the_call(server):
    def tamper(direction, index, frame):
        return flip(frame, 10) if direction == "to client" and index == 0 else frame

    proxy = FrameProxy(server.tcp_address, tamper)
    (answer,) = through(proxy, ("count", None))
    assert isinstance(answer, ConnectionError)
    proxy.close()


def test_a_replayed_request_is_refused_and_not_applied(server, shard):
    """The first write's frame, sent again in place of the second call's."""
    proxy = FrameProxy(server.tcp_address)
    proxy.on_frame = lambda d, i, f: proxy.frames["to server"][0] if d == "to server" and i == 1 else f
    seq = shard.seq
    first, second = through(proxy, ("apply", upsert([1000]), True), ("apply", upsert([1001]), True))
    assert first == seq + 1
    assert isinstance(second, ConnectionError)
    assert shard.seq == seq + 1  # applied once: the copy was refused
    assert shard.count(None) == 301 and not shard.retrieve([1001], None, False)
    assert served(server) == 301
    proxy.close()


def test_a_frame_from_another_connection_is_refused(server, shard):
    """A frame with the right counter, but sealed for another connection's keys."""
    recorder = FrameProxy(server.tcp_address)
    assert through(recorder, ("count", {"must": [{"has_id": [1, 2, 3]}]})) == [3]
    recorded = recorder.frames["to server"][0]
    replayer = FrameProxy(server.tcp_address, lambda d, i, f: recorded if d == "to server" and i == 0 else f)
    (answer,) = through(replayer, ("count", None))
    assert isinstance(answer, ConnectionError)
    assert served(server) == 300
    recorder.close()
    replayer.close()


def test_reordered_requests_are_refused_and_not_applied(server, shard):
    held = []

    def swap(direction, index, frame):
        if direction == "to server" and index == 0:
            held.append(frame)
            return b""
        if direction == "to server" and index == 1:
            return frame + held[0]
        return frame

    proxy = FrameProxy(server.tcp_address, swap)
    seq = shard.seq

    async def go():
        channel = await ShardChannel.connect_tcp(*proxy.address, SECRET)
        try:  # both leave in one write
            return await asyncio.gather(channel.call("apply", upsert([1000]), True),
                                        channel.call("apply", upsert([1001]), True), return_exceptions=True)
        finally:
            channel.close()

    answers = run(go())
    assert all(isinstance(a, ConnectionError) for a in answers), answers
    assert len(held) == 1  # the proxy did swap them
    assert shard.seq == seq and shard.count(None) == 300
    assert served(server) == 300
    proxy.close()


def test_an_untouched_proxy_changes_nothing(server, shard):
    """The proxy itself is transparent: what the tests above see is their tampering."""
    proxy = FrameProxy(server.tcp_address)
    assert through(proxy, ("count", None), ("apply", upsert([1000]), True), ("count", None))[::2] == [300, 301]
    proxy.close()


# ---------------------------------------------------------------- the wire alone


def test_both_ends_of_a_handshake_agree_and_only_with_the_same_secret():
    client, server = wire.ClientHandshake(SECRET), wire.ServerHandshake(SECRET)
    client_proof, client_framing = client.finish(server.reply(client.hello()))
    server_framing = server.finish(client_proof)
    frames = [wire.frame((i, "count", (None,), {})) for i in range(3)]
    assert server_framing.take(bytearray(client_framing.seal(frames))) == [(i, "count", (None,), {}) for i in range(3)]
    assert client_framing.take(bytearray(server_framing.seal(frames[:1]))) == [(0, "count", (None,), {})]

    stranger = wire.ServerHandshake(b"w" * 32)
    with pytest.raises(wire.HandshakeFailed):
        wire.ClientHandshake(SECRET).finish(stranger.reply(wire.ClientHandshake(SECRET).hello()))
    impostor = wire.ClientHandshake(b"w" * 32)
    honest = wire.ServerHandshake(SECRET)
    reply = honest.reply(impostor.hello())
    with pytest.raises(wire.HandshakeFailed):
        honest.finish(proof(b"shoal tcp v1 client proof", impostor.hello()[8:], reply[:32], b"w" * 32))


def test_a_partial_sealed_frame_waits_for_the_rest():
    client, server = wire.ClientHandshake(SECRET), wire.ServerHandshake(SECRET)
    client_proof, sender = client.finish(server.reply(client.hello()))
    receiver = server.finish(client_proof)
    data = sender.seal([wire.frame("a"), wire.frame("b")])
    buffer = bytearray()
    got = []
    for byte in data:
        buffer.append(byte)
        got += receiver.take(buffer)
    assert got == ["a", "b"] and not buffer
