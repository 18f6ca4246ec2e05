"""POST /collections/{name}/cluster: Qdrant 1.15's ``ClusterOperations``
(lib/collection operations/cluster_ops.rs).

An untagged enum of one-key objects, tried in Qdrant's order; a body that fits
none is 400 "data did not match any variant of untagged enum ClusterOperations"
whatever was wrong inside it (serde never says which variant came closest).
The variants Qdrant hides from its schema (``#[schemars(skip)]``: the steps of
resharding, ``to_shard_id``, ``uuid``, ``initial_state``) are read all the same,
as Qdrant reads them. One validate rule: a transfer's two peers must differ
(``validate_shard_different_peers``), a 422 at ``<operation>.to_peer_id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import AliasChoices, Field, PlainValidator, RootModel

from gateway import errors
from gateway.models.base import NESTED, QModel
from gateway.models.points import ShardKey
from gateway.models.serde import U32, U64, NonZeroU32, Untagged, enum, invalid_type, parse_uuid, serde_error

ShardTransferMethod = enum("stream_records", "snapshot", "wal_delta", "resharding_stream_records")
ReshardingDirection = enum("up", "down")
ReplicaStateName = enum("Active", "Dead", "Partial", "Initializing", "Listener", "PartialSnapshot", "Recovery",
                        "Resharding", "ReshardingScaleDown")


def _uuid(value: Any) -> str:
    if type(value) is not str:
        raise serde_error(invalid_type(value, "UUID"))
    canonical = parse_uuid(value)
    if canonical is None:
        raise serde_error(f"UUID parsing failed: {value}", "custom")
    return canonical


Uuid = Annotated[str, PlainValidator(_uuid)]


class _Transfer(QModel):
    """A transfer named by shard and peers (MoveShard, ReplicateShard, AbortShardTransfer)."""

    shard_id: U32
    to_shard_id: Optional[U32] = None
    to_peer_id: U64
    from_peer_id: U64

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        # Same peer twice is a transfer only between two shards (resharding).
        if self.to_peer_id != self.from_peer_id:
            return []
        if self.to_shard_id is not None and self.to_shard_id != self.shard_id:
            return []
        return [(f"{path}.to_peer_id", errors.transfer_to_itself(self.from_peer_id))]


class MoveShard(_Transfer):
    method: Optional[ShardTransferMethod] = None


class ReplicateShard(_Transfer):
    method: Optional[ShardTransferMethod] = None


class AbortShardTransfer(_Transfer):
    pass


class Replica(QModel):
    shard_id: U32
    peer_id: U64


class CreateShardingKey(QModel):
    shard_key: ShardKey
    shards_number: Annotated[Optional[NonZeroU32], Field(validation_alias=AliasChoices("shards_number", "shard_number"))] = None
    replication_factor: Optional[NonZeroU32] = None
    placement: Optional[list[U64]] = None
    initial_state: Optional[ReplicaStateName] = None


class DropShardingKey(QModel):
    shard_key: ShardKey


class RestartTransfer(QModel):
    shard_id: U32
    to_shard_id: Optional[U32] = None
    from_peer_id: U64
    to_peer_id: U64
    method: ShardTransferMethod


class StartResharding(QModel):
    uuid: Optional[Uuid] = None
    direction: ReshardingDirection
    peer_id: Optional[U64] = None
    shard_key: Optional[ShardKey] = None


class FinishMigratingPoints(QModel):
    shard_id: Optional[U32] = None
    peer_id: Optional[U64] = None


class _NoFields(QModel):
    """CommitReadHashRing, CommitWriteHashRing, FinishResharding, AbortResharding: ``{}``."""


class MoveShardOperation(QModel):
    move_shard: Annotated[MoveShard, NESTED]


class ReplicateShardOperation(QModel):
    replicate_shard: Annotated[ReplicateShard, NESTED]


class AbortTransferOperation(QModel):
    abort_transfer: Annotated[AbortShardTransfer, NESTED]


class DropReplicaOperation(QModel):
    drop_replica: Replica


class CreateShardingKeyOperation(QModel):
    create_sharding_key: CreateShardingKey


class DropShardingKeyOperation(QModel):
    drop_sharding_key: DropShardingKey


class RestartTransferOperation(QModel):
    restart_transfer: RestartTransfer


class StartReshardingOperation(QModel):
    start_resharding: StartResharding


class FinishMigratingPointsOperation(QModel):
    finish_migrating_points: FinishMigratingPoints


class CommitReadHashRingOperation(QModel):
    commit_read_hash_ring: _NoFields


class CommitWriteHashRingOperation(QModel):
    commit_write_hash_ring: _NoFields


class FinishReshardingOperation(QModel):
    finish_resharding: _NoFields


class AbortReshardingOperation(QModel):
    abort_resharding: _NoFields


ClusterOperationsUnion = Untagged(
    "ClusterOperations",
    MoveShardOperation,
    ReplicateShardOperation,
    AbortTransferOperation,
    DropReplicaOperation,
    CreateShardingKeyOperation,
    DropShardingKeyOperation,
    RestartTransferOperation,
    StartReshardingOperation,
    FinishMigratingPointsOperation,
    CommitReadHashRingOperation,
    CommitWriteHashRingOperation,
    FinishReshardingOperation,
    AbortReshardingOperation,
)


class ClusterOperations(RootModel[ClusterOperationsUnion]):
    """The body of POST /collections/{name}/cluster (``parse`` hands back the
    variant: a one-field model named after the operation)."""
