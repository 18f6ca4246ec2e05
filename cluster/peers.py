"""Peer ids: the numbers Qdrant's cluster API names peers by.

Qdrant draws a random u64 per peer once and keeps it in its Raft state; its peers
learn each other's ids through consensus. Shoal's Raft (PySyncObj) knows a member
only by its address, and its membership is fixed in the configuration, so a
peer's id is derived from its name instead: the same on every gateway that
knows the name, and across restarts, with nothing to store or exchange.

Names: a gateway is named by its Raft address (``host:port``, as configured);
a Ray node that holds replicas by its Ray node id (docs/cluster.md).

Ids are kept below 2**53 so that a JavaScript client (which reads JSON numbers as
doubles) sees them exactly.
"""

from __future__ import annotations

import hashlib

ID_BITS = 53


def peer_id(name: str) -> int:
    """The stable id of the peer called ``name`` (a u64 below 2**53; never 0,
    which raft-rs, and so Qdrant, reads as "no peer")."""
    digest = hashlib.blake2b(b"shoal peer\0" + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % ((1 << ID_BITS) - 1) + 1


def raft_uri(address: str) -> str:
    """How ``GET /cluster`` shows a gateway's Raft address (Qdrant shows its
    peers' p2p URIs; Shoal's Raft speaks PySyncObj over plain TCP)."""
    host, _, port = address.rpartition(":")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
