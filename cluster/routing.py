"""Which replicas of a shard serve a read or take a write, as pure functions of the
replica states (docs/cluster.md "Writes" and "Reads"; STYLE "routing apart from
fan-out"). No Ray, no asyncio, no sockets: the async fan-out sends, waits and
retries by what these return, and ``cluster.resolve`` merges what several replicas
of one shard answered.

Qdrant sources mirrored (named per function):

- lib/collection/src/operations/consistency_params.rs: the read ``consistency``;
- lib/collection/src/shards/replica_set/execute_read_operation.rs: how many
  replicas a read needs, which it asks first, the fan-out and the spares, and the
  error when too few are active;
- lib/collection/src/shards/replica_set/update.rs: where a write goes, how many
  acknowledgements it needs and when it fails;
- lib/collection/src/shards/replica_set/replica_set_state.rs, through the
  predicates of ``cluster.replicas``.

A shard, as the placement holds it: ``{"epoch": 3, "primary": "r1", "replicas":
{"r1": {"node": "<node id>", "state": "active"}, ...}}``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from cluster.replicas import can_be_source_of_truth, is_readable, takes_writes
from cluster.resolve import Condition

# ``gateway.params.ReadParams.consistency`` as the gateway parsed it: a factor >= 1,
# "majority", "quorum" or "all"; None when not given (Qdrant's default, factor 1).
Consistency = Union[int, str, None]
CONSISTENCY_TYPES = ("majority", "quorum", "all")


def replica_order(replica: str) -> tuple[int, str]:
    """Replica ids in creation order (r2 before r10), the deterministic order here."""
    return len(replica), replica


# ------------------------------------------------------------------ errors


class ReplicaSetError(Exception):
    """A shard's replica set cannot serve the request as asked: Qdrant's
    ``CollectionError::ServiceError``, which its REST API answers 500 "Service
    internal error: <text>". Deliberately not a ``ShoalError`` (those answer 400):
    ``gateway.errors`` answers any other exception 500 with that prefix."""


class NotEnoughReplicas(ReplicaSetError):
    """Fewer active replicas than the read's consistency needs
    (execute_read_operation.rs; also with no active replica at all)."""

    def __init__(self, shard_id: int, node: str | None):
        super().__init__(f"The replica set for shard {shard_id} on peer {node} does not have enough active replicas")
        self.shard_id, self.node = shard_id, node


class NoWritableReplica(ReplicaSetError):
    """No replica of the shard takes writes (update.rs ``update_impl``)."""

    def __init__(self, shard_id: int, node: str):
        super().__init__(f"The replica set for shard {shard_id} on peer {node} has no active replica")
        self.shard_id, self.node = shard_id, node


class PrimaryUnavailable(ReplicaSetError):
    """The primary is not active, so nothing sequences the shard's writes until the
    controller promotes another (Shoal's own: Qdrant has no fixed primary)."""

    def __init__(self, shard_id: int, primary: str, state: str):
        super().__init__(f"The primary replica {primary} of shard {shard_id} is {state}: "
                         "the shard takes no write until a new primary is chosen")
        self.shard_id, self.primary, self.state = shard_id, primary, state


class EpochMismatch(ReplicaSetError):
    """A write routed by a placement of another epoch than this one: the primary
    refuses it (docs/cluster.md "Writes"); the sender refreshes and retries."""

    def __init__(self, shard_id: int, sent: int, current: int):
        super().__init__(f"Shard {shard_id} is at epoch {current}, not {sent}")
        self.shard_id, self.sent, self.current = shard_id, sent, current


# ------------------------------------------------------------------ reads


@dataclass(frozen=True)
class ReadQuorum:
    """How many replicas must answer a read of one shard, and how their answers
    are resolved into one (``cluster.resolve``)."""

    required: int
    condition: Condition


def read_quorum(consistency: Consistency, replicas: int) -> ReadQuorum:
    """Qdrant's computation (``execute_and_resolve_read_operation``), where
    ``replicas`` counts every replica of the shard whatever its state:

    ==================  ===========================  ==========
    consistency         answers required             resolved
    ==================  ===========================  ==========
    None (default), n   n, clamped to [1, replicas]  ALL
    ``"all"``           replicas                     ALL
    ``"majority"``      replicas                     MAJORITY
    ``"quorum"``        replicas // 2 + 1            ALL
    ==================  ===========================  ==========

    Note that the code swaps what Qdrant's own docs (consistency_params.rs, the
    OpenAPI text) say of ``majority`` and ``quorum``; Shoal answers as Qdrant does.
    """
    if consistency is None:
        consistency = 1
    if consistency == "all":
        return ReadQuorum(replicas, Condition.ALL)
    if consistency == "majority":
        return ReadQuorum(replicas, Condition.MAJORITY)
    if consistency == "quorum":
        return ReadQuorum(replicas // 2 + 1, Condition.ALL)
    if isinstance(consistency, int) and not isinstance(consistency, bool) and consistency >= 1:
        return ReadQuorum(max(1, min(consistency, replicas)), Condition.ALL)
    raise ValueError(f"not a read consistency: {consistency!r}")


@dataclass(frozen=True)
class ReadPlan:
    """Which replicas serve one shard's read, and how (execute_read_operation.rs,
    ``execute_cluster_read_operation``). The fan-out:

    - asks every replica of ``ask`` at once;
    - on a transient failure (unreachable, timed out) starts the next of
      ``spares``; any other error (bad input) ends the read with that error;
    - stops once ``required`` answers are in (the others are not waited for) and
      resolves them with ``condition`` (``cluster.resolve``) when there are several;
    - gives up once answers plus calls in flight cannot reach ``required``:
      ``ReplicaSetError(reads_failed(errors, answered))``.
    """

    ask: tuple[str, ...]
    spares: tuple[str, ...]
    required: int
    condition: Condition


def read_targets(
    shard: Mapping[str, Any],
    consistency: Consistency,
    prefer_node: str | None,
    exclude: Collection[str] = (),
    *,
    shard_id: int,
    seed: int = 0,
    fan_out: int | None = None,
) -> ReadPlan:
    """The replicas that serve a read of ``shard``: only ``active`` ones, minus
    ``exclude`` (replicas just found failing: Qdrant's locally disabled peers), the
    one on ``prefer_node`` (the gateway's own) first, then the others rotated by
    ``seed`` (a per-request counter or random number from the caller: Qdrant
    shuffles them) so that reads of a shard spread over its replicas.

    ``fan_out`` is the collection's ``read_fan_out_factor``: that many replicas are
    asked beyond those required, at once, and the first answers win. Unset, it is
    Qdrant's default: 0 when the own node holds an active replica, else 1.

    Raises NotEnoughReplicas (500) when fewer active replicas remain than
    ``consistency`` requires; the dead, partial and initializing ones still count
    in what it requires (``all`` with one dead replica fails)."""
    replicas = shard["replicas"]
    quorum = read_quorum(consistency, len(replicas))
    usable = sorted((r for r, info in replicas.items() if is_readable(info["state"]) and r not in exclude),
                    key=replica_order)
    if not usable or len(usable) < quorum.required:
        raise NotEnoughReplicas(shard_id, prefer_node)
    own = [r for r in usable if prefer_node is not None and replicas[r]["node"] == prefer_node]
    others = [r for r in usable if r not in own]
    if others:
        turn = seed % len(others)
        others = others[turn:] + others[:turn]
    if fan_out is None:
        fan_out = 0 if own else 1
    elif fan_out < 0:
        raise ValueError("read_fan_out_factor must not be negative")
    ordered = own + others
    first = quorum.required + fan_out
    return ReadPlan(tuple(ordered[:first]), tuple(ordered[first:]), quorum.required, quorum.condition)


def reads_failed(errors: Iterable[str], answered: int) -> str:
    """Qdrant's text when too few replicas answered: "1 of 2 read operations
    failed:" then each error on its own indented line."""
    errors = list(errors)
    text = f"{len(errors)} of {answered + len(errors)} read operations failed{':' if errors else ''}"
    return text + "".join(f"\n  {e}" for e in errors)


# ------------------------------------------------------------------ writes


@dataclass(frozen=True)
class WriteTargets:
    """Where one shard's write goes: the ``primary`` sequences it and forwards it,
    in order, to ``forwards``; ``replicas`` counts every replica of the shard,
    whatever its state (it caps the quorum); ``active`` are the targets that are
    up to date; ``nodes`` maps each target to its node."""

    primary: str
    forwards: tuple[str, ...]
    epoch: int
    replicas: int
    active: frozenset[str]
    nodes: Mapping[str, str]

    @property
    def all(self) -> tuple[str, ...]:
        return (self.primary, *self.forwards)


def write_targets(shard: Mapping[str, Any], epoch: int, *, shard_id: int) -> WriteTargets:
    """The primary and the replicas it forwards to: every other ``active`` and
    ``partial`` one (``takes_writes``), never a dead or initializing one (Qdrant
    also writes to initializing replicas, ``is_updatable``; Shoal's start as
    ``partial`` when a transfer fills them). Forwards in replica order.

    Raises EpochMismatch when ``epoch`` is not the shard's, NoWritableReplica when
    no replica takes writes (update.rs: 500 "... has no active replica"), and
    PrimaryUnavailable when the primary is not active."""
    if epoch != shard["epoch"]:
        raise EpochMismatch(shard_id, epoch, shard["epoch"])
    replicas, primary = shard["replicas"], shard["primary"]
    takers = [r for r in sorted(replicas, key=replica_order) if takes_writes(replicas[r]["state"])]
    if not takers:
        raise NoWritableReplica(shard_id, replicas[primary]["node"])
    if not can_be_source_of_truth(replicas[primary]["state"]):
        raise PrimaryUnavailable(shard_id, primary, replicas[primary]["state"])
    return WriteTargets(
        primary=primary,
        forwards=tuple(r for r in takers if r != primary),
        epoch=epoch,
        replicas=len(replicas),
        active=frozenset(r for r in takers if can_be_source_of_truth(replicas[r]["state"])),
        nodes={r: replicas[r]["node"] for r in takers},
    )


def write_quorum(write_consistency_factor: int, targets: WriteTargets) -> int:
    """How many replicas (the primary included) must acknowledge a write:
    ``write_consistency_factor`` capped by the number of replicas of the shard in
    any state (update.rs: ``minimal_success_count = factor.min(replica_count)``).
    Dead replicas count in the cap but are not asked: see ``write_verdict`` for
    when fewer acknowledgements still make a write."""
    factor = write_consistency_factor
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"write_consistency_factor must be an integer >= 1, not {factor!r}")
    return min(factor, targets.replicas)


@dataclass(frozen=True)
class WriteVerdict:
    """Whether a write stands, which replicas to mark ``dead`` through Raft before
    the client is answered, and the error the client gets when it does not stand."""

    accepted: bool
    mark_dead: tuple[str, ...] = ()
    error: BaseException | None = None


def write_verdict(targets: WriteTargets, quorum: int, acked: Collection[str],
                  failed: Mapping[str, BaseException]) -> WriteVerdict:
    """Qdrant's decision once a write's replicas answered (update.rs, end of
    ``update_impl``); ``acked`` and ``failed`` name targets (one still waited for
    is in neither):

    - no failure: the write stands, even with fewer acknowledgements than
      ``quorum`` (replicas already dead were not asked and fail nothing);
    - failures, fewer acknowledgements than ``quorum``: it fails with the first
      failure's own error, and no replica is marked dead: the client retries
      (qdrant/qdrant PR 3043);
    - failures, enough acknowledgements: the failed replicas are marked dead;
    - and no active replica among those that acknowledged: 500 "Failed to apply
      operation to at least one `Active` replica. ..." (the failed still marked).
    """
    unknown = (set(acked) | set(failed)) - set(targets.all)
    if unknown or set(acked) & set(failed):
        raise ValueError(f"acknowledgements and failures must name distinct targets: {sorted(unknown)}")
    failures = [(r, failed[r]) for r in targets.all if r in failed]
    oks = [r for r in targets.all if r in acked]
    if failures and len(oks) < quorum:
        return WriteVerdict(False, (), failures[0][1])
    dead = tuple(r for r, _ in failures)
    if not any(r in targets.active for r in oks):
        detail = f"Failed peer: {targets.nodes[failures[0][0]]}, error: {failures[0][1]}" if failures else ""
        return WriteVerdict(False, dead, ReplicaSetError(
            "Failed to apply operation to at least one `Active` replica. "
            f"Consistency of this update is not guaranteed. Please retry. {detail}"))
    return WriteVerdict(True, dead)
