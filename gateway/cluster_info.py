"""Qdrant's cluster answers, built from Shoal's state. Pure: the routes
(``gateway.routes.cluster``) gather the state and send what these return.

- ``cluster_status``: ``GET /cluster``, Qdrant's ``ClusterStatus`` in its
  ``enabled`` form (Shoal always runs Raft): this gateway's peer id, the Raft
  members with their addresses, the Raft's term, commit index and leader, the
  Raft thread's last tick, and the partners it cannot reach.
- ``collection_cluster_info``: ``GET /collections/{name}/cluster``, Qdrant's
  ``CollectionClusterInfo``. Beyond Qdrant, every replica carries its point
  count and content hash (``shard.digest``) in fields of Shoal's own,
  ``shoal_points_count`` and ``shoal_content_hash``: Qdrant's clients ignore
  fields they do not know (qdrant-client's response models allow extras), and
  anyone can see that the replicas of a shard hold the same points.
- ``check_operation``: ``POST /collections/{name}/cluster``, Qdrant's checks in
  Qdrant's order (src/common/collections.rs do_update_collection_cluster, then
  what consensus checks when it applies the operation), raising Qdrant's error;
  then ``plan_operation``: the metadata op that carries out one that passed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

from cluster.metadata_ops import AbortTransfer, DropReplica, MetaOp, RequestTransfer
from cluster.peers import peer_id, raft_uri
from cluster.replicas import can_be_source_of_truth, next_replica_id
from cluster.topology import Layout
from gateway import errors
from gateway.errors import BadRequest
from shard.digest import ShardDigest
from shard.types import NotFound

if TYPE_CHECKING:
    from cluster.metadata import RaftStatus

ROLES = {"leader": "Leader", "follower": "Follower", "candidate": "Candidate"}  # Qdrant's StateRole
UNREACHABLE = "no connection to this peer"


def _timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, as Qdrant's chrono timestamps print."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cluster_status(status: RaftStatus, now: float) -> dict[str, Any]:
    """Qdrant's ClusterStatus (``enabled``) for this gateway's Raft node."""
    members = (status.self_address, *status.partners)
    if status.running:
        thread = {"consensus_thread_status": "working", "last_update": _timestamp(status.last_tick or now)}
    else:
        thread = {"consensus_thread_status": "stopped"}
    return {
        "status": "enabled",
        "peer_id": peer_id(status.self_address),
        "peers": {str(peer_id(address)): {"uri": raft_uri(address)} for address in members},
        "raft_info": {
            "term": status.term,
            "commit": status.commit,
            "pending_operations": max(0, status.commit - status.applied),
            "leader": peer_id(status.leader) if status.leader else None,
            "role": ROLES[status.role],
            "is_voter": True,  # every PySyncObj member votes; Shoal has no learners
        },
        "consensus_thread_status": thread,
        "message_send_failures": {
            raft_uri(address): {"count": count, "latest_error": UNREACHABLE, "latest_error_timestamp": _timestamp(at)}
            for address, (count, at) in sorted(status.unreachable.items())
        },
    }


def collection_cluster_info(self_peer: int, layout: Layout,
                            digests: Sequence[ShardDigest | None]) -> dict[str, Any]:
    """Qdrant's CollectionClusterInfo; ``digests[i]`` belongs to ``layout.replicas[i]``
    (None when that replica did not answer: 0 points, as Qdrant counts a shard it
    cannot count, and no hash)."""
    local, remote = [], []
    for replica, digest in zip(layout.replicas, digests):
        points = digest.points_count if digest is not None else 0
        content = digest.content_hash if digest is not None else None
        if replica.local:
            local.append({"shard_id": replica.shard_id, "points_count": points, "state": replica.qdrant_state,
                          "shoal_replica": replica.replica, "shoal_primary": replica.primary,
                          "shoal_content_hash": content})
        else:
            remote.append({"shard_id": replica.shard_id, "peer_id": replica.peer_id, "state": replica.qdrant_state,
                           "shoal_replica": replica.replica, "shoal_primary": replica.primary,
                           "shoal_points_count": points, "shoal_content_hash": content})
    local.sort(key=lambda s: s["shard_id"])
    remote.sort(key=lambda s: s["shard_id"])
    return {
        "peer_id": self_peer,
        "shard_count": layout.shard_count,
        "local_shards": local,
        "remote_shards": remote,
        "shard_transfers": [{"shard_id": t.shard_id, "from": t.from_peer, "to": t.to_peer, "sync": t.sync}
                            for t in layout.transfers],
        # resharding_operations: left out, as Qdrant leaves it out when none runs
    }


def check_operation(kind: str, args: dict[str, Any], collection: str, layout: Layout, peers: set[int]) -> None:
    """Refuse ``{kind: args}`` as Qdrant would on this cluster: BadRequest (400) or
    NotFound (404) with Qdrant's text. An operation that passes every check is
    one Qdrant would carry out: ``plan_operation`` says how. ``peers``: the ids of
    the cluster's members."""

    def shard_exists(shard: int) -> None:
        if not layout.has_shard(shard):
            raise BadRequest(errors.shard_not_in_collection(shard, collection))

    def peer_exists(peer: int) -> None:
        if peer not in peers:
            raise BadRequest(errors.peer_not_found(peer))

    if kind in ("move_shard", "replicate_shard"):
        shard, source = args["shard_id"], args["from_peer_id"]
        shard_exists(shard)
        peer_exists(args["to_peer_id"])
        peer_exists(source)
        # Consensus, starting the transfer (shards/transfer/helpers.rs validate_transfer).
        if not any(r.peer_id == source and can_be_source_of_truth(r.state) for r in layout.replicas_of(shard)):
            raise BadRequest(errors.shard_not_active_on_peer(shard, source))
    elif kind in ("abort_transfer", "restart_transfer"):
        shard, source, target = args["shard_id"], args["from_peer_id"], args["to_peer_id"]
        if layout.transfer(shard, source, target) is None:
            raise NotFound(errors.transfer_not_found(source, target, collection, shard))
    elif kind == "drop_replica":
        shard, peer = args["shard_id"], args["peer_id"]
        shard_exists(shard)
        peer_exists(peer)
        # Consensus, applying the replica change (collection/mod.rs handle_replica_changes).
        if all(r.peer_id != peer for r in layout.replicas_of(shard)):
            raise BadRequest(errors.no_replica_on_peer(peer, shard))
        if len(layout.replicas_of(shard)) == 1 or layout.is_last_source_of_truth(shard, peer):
            raise BadRequest(errors.last_active_replica(shard, peer))
    elif kind in ("create_sharding_key", "drop_sharding_key"):
        raise BadRequest(errors.shard_key_with_auto_sharding())  # Shoal shards automatically only
    elif kind == "start_resharding":
        raise BadRequest(errors.resharding_unavailable())
    else:  # abort_resharding and resharding's internal steps
        raise BadRequest(errors.resharding_not_in_progress(collection))


def plan_operation(kind: str, args: dict[str, Any], collection: str, incarnation: str, placement: dict[str, Any],
                   layout: Layout, nodes: dict[int, str]) -> MetaOp:
    """The metadata op that carries out an operation ``check_operation`` passed, on a
    replicated collection (``placement`` lists its shards, ``layout`` is its view):
    the controller on the Raft leader does the rest (docs/cluster.md). ``nodes``:
    peer id -> Ray node id of every node that may hold replicas. Refuses, with
    Qdrant's text where Qdrant has one, what Shoal cannot do: a target that is not
    such a node, or already holds a replica of the shard, or a shard already in a
    transfer with either peer."""
    shards = placement.get("shards") if isinstance(placement, dict) else None
    if not isinstance(shards, list):
        raise BadRequest(errors.replica_changes_not_supported())
    shard_id = args["shard_id"]
    entry = shards[shard_id]

    def replica_on(peer: int, states: tuple[str, ...] = ()) -> str | None:
        for view in layout.replicas_of(shard_id):
            if view.peer_id == peer and (not states or view.state in states):
                return view.replica
        return None

    if kind in ("move_shard", "replicate_shard"):
        source, target = args["from_peer_id"], args["to_peer_id"]
        for t in layout.transfers:
            if t.shard_id == shard_id and {t.from_peer, t.to_peer} & {source, target}:
                raise BadRequest(errors.already_in_transfer(shard_id, t.from_peer, t.to_peer))
        if target not in nodes:
            raise BadRequest(errors.peer_holds_no_shards(target))
        if replica_on(target) is not None:
            raise BadRequest(errors.replica_already_on_peer(shard_id, target))
        return RequestTransfer(collection, incarnation, shard_id, next_replica_id(entry), nodes[target],
                               replica_on(source, ("active",)), move=kind == "move_shard")
    if kind == "abort_transfer":
        transfer = layout.transfer(shard_id, args["from_peer_id"], args["to_peer_id"])
        return AbortTransfer(collection, incarnation, shard_id, transfer.replica)
    if kind == "drop_replica":
        return DropReplica(collection, incarnation, shard_id, replica_on(args["peer_id"]))
    raise BadRequest(errors.replica_changes_not_supported())  # restart_transfer: Shoal retries transfers itself
