"""Where a collection's shard replicas are, as Qdrant's cluster API names things:
peers by id (``cluster.peers``), replica states by Qdrant's names. Pure: built
from a collection's placement in the metadata, no I/O.

Two placements exist (``cluster.replicas``):

- the single-node layout, ``{"incarnation"}`` alone: each shard has one copy,
  which the answering gateway serves; it is reported on this peer, ``Active``;
- the replicated layout, with ``"shards"``: each replica lives on a Ray node and
  is reported on that node's peer (``peer_id(node)``), local when the node is the
  answering gateway's own (``self_node``), in its recorded state.

A ``partial`` replica is being filled by a transfer (``Layout.transfers``): from the
source the cluster API asked for, else from the shard's primary (the controller's
choice when that one can serve), to the replica's node; a move (``move_shard``) is not
``sync``, a copy (``replicate_shard``, or the controller's repair) is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from cluster.peers import peer_id
from cluster.replicas import ReplicaState, can_be_source_of_truth

# Shoal's replica states by Qdrant's names (replica_set_state.rs, ReplicaState).
QDRANT_STATE_NAMES = {
    ReplicaState.ACTIVE.value: "Active",
    ReplicaState.DEAD.value: "Dead",
    ReplicaState.PARTIAL.value: "Partial",
    ReplicaState.INITIALIZING.value: "Initializing",
}
SINGLE_NODE_REPLICA = "r0"


@dataclass(frozen=True)
class ReplicaView:
    shard_id: int
    replica: str  # "r0", "r1", ...: the id in the placement
    peer_id: int
    state: str  # Shoal's state ("active", ...)
    local: bool  # on the answering gateway's peer
    primary: bool = False  # the shard's primary: it sequences the shard's writes

    @property
    def qdrant_state(self) -> str:
        return QDRANT_STATE_NAMES[self.state]


@dataclass(frozen=True)
class Transfer:
    """A shard transfer in progress (Qdrant's ShardTransferInfo)."""

    shard_id: int
    from_peer: int
    to_peer: int
    sync: bool  # True: a copy (replicate_shard); False: a move
    replica: str = ""  # the target replica's id in the placement


@dataclass(frozen=True)
class Layout:
    shard_count: int
    replicas: tuple[ReplicaView, ...]
    transfers: tuple[Transfer, ...] = field(default=())

    def replicas_of(self, shard_id: int) -> list[ReplicaView]:
        return [r for r in self.replicas if r.shard_id == shard_id]

    def has_shard(self, shard_id: int) -> bool:
        return 0 <= shard_id < self.shard_count

    def peers(self) -> set[int]:
        return {r.peer_id for r in self.replicas}

    def transfer(self, shard_id: int, from_peer: int, to_peer: int) -> Transfer | None:
        for t in self.transfers:
            if (t.shard_id, t.from_peer, t.to_peer) == (shard_id, from_peer, to_peer):
                return t
        return None

    def is_last_source_of_truth(self, shard_id: int, peer: int) -> bool:
        """Would removing ``peer``'s replica leave the shard without an active one?"""
        active = {r.peer_id for r in self.replicas_of(shard_id) if can_be_source_of_truth(r.state)}
        return active <= {peer}


def layout(placement: Any, shard_count: int, self_peer: int, self_node: str | None = None,
           peer_of: Callable[[str], int] = peer_id) -> Layout:
    """The replicas of a collection whose metadata holds ``placement`` and whose
    config says ``shard_count`` shards, as seen by the gateway ``self_peer``
    (on Ray node ``self_node``, when known)."""
    shards = placement.get("shards") if isinstance(placement, dict) else None
    if not shards:
        views = tuple(ReplicaView(i, SINGLE_NODE_REPLICA, self_peer, ReplicaState.ACTIVE.value, True, True)
                      for i in range(shard_count))
        return Layout(shard_count, views)
    views, transfers = [], []

    def peer(node: str) -> int:
        return self_peer if self_node is not None and node == self_node else peer_of(node)

    for shard_id, shard in enumerate(shards):
        for replica in sorted(shard["replicas"], key=lambda r: (len(r), r)):  # r2 before r10
            where = shard["replicas"][replica]
            local = self_node is not None and where["node"] == self_node
            views.append(ReplicaView(shard_id, replica, peer(where["node"]), where["state"], local,
                                     replica == shard.get("primary")))
            if where["state"] == ReplicaState.PARTIAL.value:
                source = shard["replicas"].get(where.get("source") or shard["primary"])
                if source is not None and source is not where:
                    transfers.append(Transfer(shard_id, peer(source["node"]), peer(where["node"]),
                                              not where.get("move"), replica))
    return Layout(len(shards), tuple(views), tuple(transfers))
