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
