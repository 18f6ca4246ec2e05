"""What crosses a shard socket: frames, their compact forms, and their authentication.

``cluster.transport`` moves bytes (threads and sockets on the shard's side,
asyncio on the gateway's); this module decides what the bytes are. One framing
serves both transports; only the last step differs:

- **Unix socket** (same machine): ``<u32 length><pickle>``, as is. The kernel
  tells who the peer is, and only this user's processes are served.
- **TCP** (other machines): a handshake first, then every frame carries a MAC.

TCP handshake (the client speaks first; nonces are 32 random bytes; HMAC is
HMAC-SHA256 keyed by the shared secret; labels tell every use apart)::

    client -> server   b"SHOALTC1" + Nc                                   40 bytes
    server -> client   Ns + HMAC(b"shoal tcp v1 server proof" + Nc + Ns)  64 bytes
    client -> server   HMAC(b"shoal tcp v1 client proof" + Nc + Ns)       32 bytes

Each side checks the other's proof with a constant-time compare. The server
answers only a well-formed hello and serves only after the client's proof, so
nothing from an unauthenticated peer is ever unpickled; the server proves first
so that a client never sends anything to a server that does not know the
secret. Then, in each direction, with its own key
``HMAC(b"shoal tcp v1 key client->server" + Nc + Ns)`` (and ``server->client``)::

    <u32 length><pickle><tag: first 16 bytes of HMAC(key, <u64 frame counter> + <u32 length><pickle>)>

The counter is implicit: each side counts the frames it sent and received
since the handshake. A frame whose tag does not match is refused before it is
unpickled and the connection closed: a tampered, replayed (an old counter),
reordered or dropped frame, or one from another connection (other nonces,
other key), never reaches ``pickle.loads``.

That alone is authenticity and integrity, not confidentiality: frames
(vectors, payloads, filters) travel in clear. A server started with
``encrypt=True`` (``service.enable_tls``) also makes the connection
**encrypted**: it proves itself under the labels ``b"shoal tcp v1 encrypted
server proof"`` (and ``... client proof``, ``... key client->server``, ``... key
server->client``) instead, the client learns the mode from which proof
matches (a man in the middle cannot turn one into the other without the
secret), and every write is one AES-256-GCM record under that direction's key::

    <u32 length of what follows><AES-GCM(key, nonce = <u64 record counter> + 4 zero bytes,
                                         plaintext = whole frames, associated data = the length)>

Keys are new for every connection (they depend on both nonces) and the
counter never repeats within one, so no nonce is used twice; a record that
fails its tag (tampered, replayed, reordered, from another connection) is
refused before anything in it is unpickled. What stays visible on the wire:
that two machines talk, when, and how many bytes each write carries.

Anyone on the path can cut a connection (which then fails, never silently
misbehaves). The secret must be random (at least 16 bytes, e.g. a key derived
from the cluster secret): a handshake seen on the wire lets anyone test
guesses of it offline.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import secrets
import struct
from dataclasses import fields
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shard.types import NearestQuery, ScoredPoint, SearchRequest

HEADER = struct.Struct("<I")

# ---------------------------------------------------------------- compact forms


def hits_to_wire(results: list[list[ScoredPoint]]) -> list[list[tuple]]:
    """Search answers as plain tuples: pickle handles them ~8x faster than
    dataclass instances, and the answers of every search cross the socket."""
    return [[(p.id, p.version, p.score, p.payload, p.vector, p.order_value) for p in hits] for hits in results]


def hits_from_wire(results: list[list[tuple]]) -> list[list[ScoredPoint]]:
    return [[ScoredPoint(*t) for t in hits] for hits in results]


_SEARCH_FIELDS = tuple(f.name for f in fields(SearchRequest))[1:]  # all but the query


def searches_to_wire(requests: list[SearchRequest]) -> list:
    """Nearest searches as tuples with the vector as raw float32 bytes: pickle
    takes them ~2x faster than the dataclasses and the array, and every search
    crosses the socket. Other queries go as they are."""
    wire = []
    for req in requests:
        vector = req.query.vector if type(req.query) is NearestQuery else None
        if vector is not None and vector.dtype == np.float32 and vector.ndim == 1:
            wire.append((vector.tobytes(), *(getattr(req, name) for name in _SEARCH_FIELDS)))
        else:
            wire.append(req)
    return wire


def searches_from_wire(wire: list) -> list[SearchRequest]:
    return [
        SearchRequest(NearestQuery(np.frombuffer(r[0], dtype=np.float32)), *r[1:]) if type(r) is tuple else r
        for r in wire
    ]


# ---------------------------------------------------------------------- frames


def frame(obj: Any) -> bytes:
    """``<u32 length><pickle>``: requests ``(id, method, args, kwargs)``,
    answers ``(id, ok, result_or_exception)``."""
    data = pickle.dumps(obj, protocol=5)
    return HEADER.pack(len(data)) + data


def answer_frame(answer: tuple) -> bytes:
    try:
        return frame(answer)
    except Exception as exc:  # an unpicklable result: say so rather than hang the caller
        return frame((answer[0], False, RuntimeError(f"could not send the answer: {exc}")))


class PlainFraming:
    """Frames as they are: the Unix socket, whose peer the kernel vouches for."""

    def seal(self, frames: list[bytes]) -> bytes:
        """The bytes to write for ``frames``, in this order."""
        return b"".join(frames)

    def take(self, buffer: bytearray) -> list:
        """Every whole frame at the front of ``buffer``, unpickled, and removed from it."""
        objects = []
        at = 0
        while len(buffer) - at >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, at)
            start = at + HEADER.size
            if len(buffer) - start < length:
                break
            objects.append(pickle.loads(buffer[start : start + length]))
            at = start + length
        if at:
            del buffer[:at]
        return objects


PLAIN = PlainFraming()  # it holds no state: one for every Unix connection

TAG = 16  # bytes of HMAC-SHA256 kept per frame: forging one is a 2^-128 guess
_COUNTER = struct.Struct("<Q")


class FrameRejected(ConnectionError):
    """A frame's MAC did not match: the connection must be closed."""


class SealedFraming:
    """Frames with a MAC each (see the module's docstring), for one connection.

    ``seal`` numbers frames in the order it is given them, so its caller must
    write its bytes in that same order (the shard's server seals under its send
    lock); ``take`` is called by the one reader of the connection.
    """

    def __init__(self, send_key: bytes, receive_key: bytes):
        # Keyed once; each frame copies the keyed state (cheaper than re-keying).
        self._send = hmac.new(send_key, digestmod=hashlib.sha256)
        self._receive = hmac.new(receive_key, digestmod=hashlib.sha256)
        self._sent = 0
        self._received = 0

    @staticmethod
    def _tag(keyed, counter: int, data) -> bytes:
        mac = keyed.copy()
        mac.update(_COUNTER.pack(counter))
        mac.update(data)
        return mac.digest()[:TAG]

    def seal(self, frames: list[bytes]) -> bytes:
        parts = []
        for data in frames:
            parts += (data, self._tag(self._send, self._sent, data))
            self._sent += 1
        return b"".join(parts)

    def take(self, buffer: bytearray) -> list:
        """As ``PlainFraming.take``, but every frame's tag is checked before its
        pickle is read; a bad one raises FrameRejected."""
        objects = []
        at = 0
        while len(buffer) - at >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, at)
            end = at + HEADER.size + length
            if len(buffer) < end + TAG:
                break
            data = buffer[at:end]
            if not hmac.compare_digest(self._tag(self._receive, self._received, data), buffer[end : end + TAG]):
                raise FrameRejected(f"frame {self._received} failed its MAC check")
            self._received += 1
            objects.append(pickle.loads(memoryview(data)[HEADER.size :]))
            at = end + TAG
        if at:
            del buffer[:at]
        return objects


class EncryptedFraming:
    """Frames in AES-256-GCM records (see the module's docstring), for one
    connection. Each ``seal`` call makes one record (or a few, for writes over
    RECORD_MAX) of whole frames; the same ordering rules as SealedFraming."""

    def __init__(self, send_key: bytes, receive_key: bytes):
        self._send = AESGCM(send_key)
        self._receive = AESGCM(receive_key)
        self._sent = 0
        self._received = 0

    @staticmethod
    def _nonce(counter: int) -> bytes:
        return _COUNTER.pack(counter) + bytes(4)

    def seal(self, frames: list[bytes]) -> bytes:
        records, group, size = [], [], 0
        for data in frames:
            if group and size + len(data) > RECORD_MAX:
                records.append(self._record(group))
                group, size = [], 0
            group.append(data)
            size += len(data)
        if group:
            records.append(self._record(group))
        return b"".join(records)

    def _record(self, frames: list[bytes]) -> bytes:
        plain = b"".join(frames)
        header = HEADER.pack(len(plain) + TAG)
        sealed = self._send.encrypt(self._nonce(self._sent), plain, header)
        self._sent += 1
        return header + sealed

    def take(self, buffer: bytearray) -> list:
        """Every whole record at the front of ``buffer``: decrypted, checked, its
        frames unpickled, removed from ``buffer``; a bad one raises FrameRejected."""
        objects = []
        at = 0
        while len(buffer) - at >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, at)
            end = at + HEADER.size + length
            if len(buffer) < end:
                break
            try:
                plain = bytearray(self._receive.decrypt(self._nonce(self._received), bytes(buffer[at + HEADER.size:end]),
                                                        bytes(buffer[at:at + HEADER.size])))
            except InvalidTag:
                raise FrameRejected(f"record {self._received} failed its authentication") from None
            self._received += 1
            objects += PLAIN.take(plain)
            if plain:  # a record holds whole frames only
                raise FrameRejected(f"record {self._received - 1} ends inside a frame")
            at = end
        if at:
            del buffer[:at]
        return objects


RECORD_MAX = 1 << 30  # plaintext bytes per record, well under AES-GCM's and the u32 length's limits

# ------------------------------------------------------------------- handshake

MAGIC = b"SHOALTC1"  # the protocol and its version
NONCE = 32
PROOF = 32
HELLO_SIZE = len(MAGIC) + NONCE
REPLY_SIZE = NONCE + PROOF
MIN_SECRET = 16

_SERVER_PROOF = b"shoal tcp v1 server proof"
_CLIENT_PROOF = b"shoal tcp v1 client proof"
_CLIENT_KEY = b"shoal tcp v1 key client->server"
_SERVER_KEY = b"shoal tcp v1 key server->client"
# The same four for an encrypted connection: which set the server proves under is the mode.
_ENCRYPTED = b"shoal tcp v1 encrypted "
_LABELS = {False: (_SERVER_PROOF, _CLIENT_PROOF, _CLIENT_KEY, _SERVER_KEY),
           True: tuple(_ENCRYPTED + label.removeprefix(b"shoal tcp v1 ")
                       for label in (_SERVER_PROOF, _CLIENT_PROOF, _CLIENT_KEY, _SERVER_KEY))}


def _framing(encrypted: bool, send_key: bytes, receive_key: bytes):
    return (EncryptedFraming if encrypted else SealedFraming)(send_key, receive_key)


class HandshakeFailed(ConnectionError):
    """The peer did not prove it knows the secret (or did not speak the protocol)."""


def check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET:
        raise ValueError(f"the shard wire secret must be at least {MIN_SECRET} random bytes")
    return secret


def _hmac(secret: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    # The nonces have a fixed size, so label + nonces can be read only one way.
    return hmac.new(secret, label + client_nonce + server_nonce, hashlib.sha256).digest()


class ClientHandshake:
    """The gateway's side, without I/O: send ``hello()``, read REPLY_SIZE bytes,
    ``finish(reply)`` checks them and gives the proof to send and the framing
    (encrypted when the server proved itself under the encrypted labels)."""

    def __init__(self, secret: bytes):
        self._secret = check_secret(secret)
        self._nonce = secrets.token_bytes(NONCE)

    def hello(self) -> bytes:
        return MAGIC + self._nonce

    def finish(self, reply: bytes) -> tuple[bytes, SealedFraming | EncryptedFraming]:
        server_nonce, proof = reply[:NONCE], reply[NONCE:]
        if len(reply) != REPLY_SIZE:
            raise HandshakeFailed("the shard did not prove it knows the secret")
        for encrypted in (False, True):
            server_label, client_label, client_key, server_key = _LABELS[encrypted]
            if hmac.compare_digest(proof, _hmac(self._secret, server_label, self._nonce, server_nonce)):
                keys = [_hmac(self._secret, label, self._nonce, server_nonce) for label in (client_key, server_key)]
                return _hmac(self._secret, client_label, self._nonce, server_nonce), _framing(encrypted, *keys)
        raise HandshakeFailed("the shard did not prove it knows the secret")


class ServerHandshake:
    """The shard's side, without I/O: read HELLO_SIZE bytes, send ``reply(hello)``,
    read PROOF bytes, ``finish(proof)`` gives the framing or raises HandshakeFailed.
    ``encrypt``: make the connection encrypted (the client follows)."""

    def __init__(self, secret: bytes, encrypt: bool = False):
        self._secret = check_secret(secret)
        self._labels = _LABELS[bool(encrypt)]
        self._encrypt = bool(encrypt)
        self._nonce = secrets.token_bytes(NONCE)
        self._client_nonce: bytes | None = None

    def reply(self, hello: bytes) -> bytes:
        if len(hello) != HELLO_SIZE or not hello.startswith(MAGIC):
            raise HandshakeFailed("not a Shoal shard hello")
        self._client_nonce = hello[len(MAGIC) :]
        return self._nonce + _hmac(self._secret, self._labels[0], self._client_nonce, self._nonce)

    def finish(self, proof: bytes) -> SealedFraming | EncryptedFraming:
        if self._client_nonce is None:
            raise HandshakeFailed("no hello")
        _, client_label, client_key, server_key = self._labels
        expected = _hmac(self._secret, client_label, self._client_nonce, self._nonce)
        if len(proof) != PROOF or not hmac.compare_digest(proof, expected):
            raise HandshakeFailed("the client did not prove it knows the secret")
        keys = [_hmac(self._secret, label, self._client_nonce, self._nonce) for label in (server_key, client_key)]
        return _framing(self._encrypt, *keys)
