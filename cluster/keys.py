"""Keys derived from the cluster secret, one per purpose.

The gateways' Raft traffic and the gateways' connections to shards on other
nodes are authenticated with the cluster secret (``cluster.secret``). Each use
gets a key of its own, derived with HMAC-SHA256 under a label, so that what one
protocol reveals or accepts can never be replayed against the other.

A single gateway (no Raft peers) needs no shared secret, but its Raft port still
listens: it gets a random password for the life of the process, so that no other
local user can talk to it (PySyncObj's protocol is pickle; with a password every
message is authenticated, Fernet, before it is unpickled).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

RAFT_LABEL = b"shoal raft v1"
SHARD_WIRE_LABEL = b"shoal shard wire v1"


class SecretRequired(ValueError):
    """A cluster of several gateways was asked for without a secret."""


def derive(secret: str, label: bytes) -> bytes:
    """The key for ``label``: HMAC-SHA256(secret, label)."""
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def raft_password(secret: str | None, peers: list[str] | tuple[str, ...]) -> str:
    """PySyncObj's ``password``: derived from the secret, or random for a single
    gateway. Peers without a secret are refused: their Raft traffic would be
    unauthenticated pickle on the network."""
    if secret:
        return derive(secret, RAFT_LABEL).hex()
    if peers:
        raise SecretRequired("cluster.secret is required when cluster.raft_peers is set "
                             "(--cluster-secret or SHOAL__CLUSTER__SECRET)")
    return secrets.token_hex(32)


# Every gateway of a Ray cluster must hold the same secret; one with another
# secret would sit silently leaderless (its Raft messages fail authentication).
# The first gateway to join stores a verifier of its secret in Ray's key-value
# store, and each gateway compares before it starts Raft. Never the secret, nor
# a fast hash of it: a salted scrypt, so that whoever can read Ray's store
# cannot cheaply test guesses of the secret.
VERIFIER_KEY = "cluster-secret-verifier"
_VERIFIER_TAG = b"shoal secret verifier v1:"
_SALT = 16


def secret_verifier(secret: str, salt: bytes | None = None) -> bytes:
    salt = secrets.token_bytes(_SALT) if salt is None else salt
    return _VERIFIER_TAG + salt + hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def verifies(secret: str, verifier: bytes) -> bool:
    """Whether ``verifier`` (from ``secret_verifier``) was made from ``secret``."""
    if not verifier.startswith(_VERIFIER_TAG) or len(verifier) != len(_VERIFIER_TAG) + _SALT + 32:
        return False
    salt = verifier[len(_VERIFIER_TAG):len(_VERIFIER_TAG) + _SALT]
    return hmac.compare_digest(secret_verifier(secret, salt), verifier)
