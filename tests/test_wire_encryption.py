"""Encrypted shard connections (``service.enable_tls``): what crosses the socket
does not show the payloads, and any change to it fails the connection.

The wire alone first (handshake and framing without I/O), then a real
``ShardServer`` over TCP with a recording proxy between it and the gateway's
``ShardChannel``. Each "not in the bytes" check is paired with the same check
on a connection without encryption, where the bytes are found: so the check
can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import numpy as np
import pytest

from cluster import wire
from cluster.transport import ShardChannel, ShardServer
from shard.local_shard import LocalShard
from shard.types import Distance, PayloadSelector, ShardConfig, VectorParams

SECRET = b"k" * 32
MARKER = "confidential-payload-7f3a9c"
DIM = 8


def connected(encrypt: bool):
    client, server = wire.ClientHandshake(SECRET), wire.ServerHandshake(SECRET, encrypt=encrypt)
    proof, client_framing = client.finish(server.reply(client.hello()))
    return client_framing, server.finish(proof)


def request(i: int) -> bytes:
    return wire.frame((i, "apply", ({"type": "set_payload", "payload": {"secret": MARKER}},), {}))


# ------------------------------------------------------------------ the wire alone


@pytest.mark.parametrize("encrypt", [False, True])
def test_the_server_decides_and_both_ends_agree(encrypt):
    client_framing, server_framing = connected(encrypt)
    kind = wire.EncryptedFraming if encrypt else wire.SealedFraming
    assert type(client_framing) is kind and type(server_framing) is kind
    frames = [request(i) for i in range(3)]
    sealed = client_framing.seal(frames)
    assert server_framing.take(bytearray(sealed)) == [wire.PLAIN.take(bytearray(f))[0] for f in frames]
    assert (MARKER.encode() in sealed) is not encrypt
    answer = server_framing.seal([wire.frame((0, True, {"secret": MARKER}))])
    assert client_framing.take(bytearray(answer)) == [(0, True, {"secret": MARKER})]
    assert (MARKER.encode() in answer) is not encrypt


def test_a_record_arrives_in_pieces():
    sender, receiver = connected(True)
    data = sender.seal([request(0), request(1)]) + sender.seal([request(2)])
    buffer, got = bytearray(), []
    for byte in data:
        buffer.append(byte)
        got += receiver.take(buffer)
    assert [g[0] for g in got] == [0, 1, 2] and not buffer


@pytest.mark.parametrize("where", [0, 3, 4, 20, -1])
def test_a_changed_byte_is_refused(where):
    sender, receiver = connected(True)
    record = bytearray(sender.seal([request(0)]))
    record[where] ^= 0x01
    with pytest.raises((wire.FrameRejected, ValueError)):
        if not receiver.take(record):  # a changed length: the record never completes
            raise ValueError("incomplete")


def test_replayed_reordered_and_foreign_records_are_refused():
    sender, receiver = connected(True)
    first, second = sender.seal([request(0)]), sender.seal([request(1)])
    with pytest.raises(wire.FrameRejected):  # reordered
        receiver.take(bytearray(second))
    sender, receiver = connected(True)
    first = sender.seal([request(0)])
    receiver.take(bytearray(first))
    with pytest.raises(wire.FrameRejected):  # replayed
        receiver.take(bytearray(first))
    other_sender, _ = connected(True)
    _, receiver = connected(True)
    with pytest.raises(wire.FrameRejected):  # another connection's keys
        receiver.take(bytearray(other_sender.seal([request(0)])))


def test_a_plain_proof_cannot_pass_for_an_encrypted_one():
    """The mode is proved: a client facing an encrypting server ends up
    encrypted whatever it hoped, and a server proof under one mode's labels is
    no proof under the other's."""
    client, server = wire.ClientHandshake(SECRET), wire.ServerHandshake(SECRET, encrypt=True)
    reply = server.reply(client.hello())
    _, framing = client.finish(reply)
    assert isinstance(framing, wire.EncryptedFraming)
    plain_server = wire.ServerHandshake(SECRET)
    stranger = wire.ClientHandshake(SECRET)
    plain_reply = plain_server.reply(stranger.hello())
    forged = plain_reply[:wire.NONCE] + reply[wire.NONCE:]  # another session's proof
    with pytest.raises(wire.HandshakeFailed):
        stranger.finish(forged)


# ------------------------------------------------------------- real sockets


class RecordingProxy:
    """Forwards one TCP connection both ways and keeps every byte; ``tamper``
    flips one bit of the first client->server chunk sent after ``after`` bytes."""

    def __init__(self, target: tuple[str, int], tamper_after: int | None = None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.target = target
        self.seen = {"up": bytearray(), "down": bytearray()}
        self.tamper_after = tamper_after
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
        self._pump(upstream, client, "down")

    def _pump(self, source, sink, direction):
        try:
            while chunk := source.recv(1 << 16):
                seen = self.seen[direction]
                if direction == "up" and self.tamper_after is not None and len(seen) + len(chunk) > self.tamper_after:
                    chunk = bytearray(chunk)
                    chunk[max(self.tamper_after - len(seen), 0)] ^= 0x01
                    self.tamper_after = None
                seen += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.listener.close()


@pytest.fixture
def shard(tmp_path):
    shard = LocalShard(tmp_path / "shard", ShardConfig(vectors={"": VectorParams(DIM, Distance.COSINE)}),
                       background_indexing=False)
    yield shard
    shard.close(take_snapshot=False)


def _write_and_read(address) -> list:
    async def go():
        channel = await ShardChannel.connect_tcp(*address, SECRET)
        try:
            vectors = np.random.default_rng(0).normal(size=(2, DIM)).astype(np.float32)
            await channel.call("apply", {"type": "upsert", "ids": [1, 2], "vectors": {"": vectors},
                                         "payloads": [{"secret": MARKER}, {"secret": MARKER}]})
            return await channel.call("retrieve", [1, 2], PayloadSelector(), False)
        finally:
            channel.close()

    return asyncio.run(asyncio.wait_for(go(), 30))


@pytest.mark.parametrize("encrypt", [False, True])
def test_payloads_cross_the_socket_encrypted(shard, encrypt):
    server = ShardServer(shard, secret=SECRET, tcp_host="127.0.0.1", encrypt=encrypt)
    proxy = RecordingProxy(server.tcp_address)
    try:
        points = _write_and_read(proxy.address)
    finally:
        proxy.close()
        server.close()
    assert [p.payload for p in points] == [{"secret": MARKER}] * 2
    for direction in ("up", "down"):
        assert (MARKER.encode() in proxy.seen[direction]) is not encrypt, direction


def test_a_tampered_encrypted_request_fails_the_connection_and_changes_nothing(shard, caplog):
    server = ShardServer(shard, secret=SECRET, tcp_host="127.0.0.1", encrypt=True)
    # After the hello (40 bytes) and the proof (32): inside the first record.
    proxy = RecordingProxy(server.tcp_address, tamper_after=wire.HELLO_SIZE + wire.PROOF + 30)
    try:
        with pytest.raises(ConnectionError):
            _write_and_read(proxy.address)
    finally:
        proxy.close()
        server.close()
    assert shard.count(None) == 0
    assert "refused a frame" in caplog.text
