"""The vocabulary of collection metadata, and the one function that applies it.

Every change to which collections and aliases exist is one of the operations below,
turned into plain JSON before it is proposed to Raft and parsed back on every node,
then applied by :func:`apply`. Whatever needs a clock, a UUID or a random choice
(shard placement, creation time) is decided by the proposer and carried in the op:
``apply`` is a pure, deterministic function of (state, op), so every replica that
applies the same log reaches the same state. (Qdrant's ``CollectionMetaOperations``,
applied by every peer from its consensus log, follow the same rule.)

The state is plain JSON too::

    {"collections": {name: {"config": {...}, "placement": <JSON>}},
     "aliases": {alias: collection_name},
     "version": n}      # bumped by every operation that changed something

``apply`` never raises for a well-formed op on any state and never mutates its
inputs: a rejected op returns the unchanged state and an error :class:`OpResult`
whose texts are Qdrant's (``toc/collection_meta_ops.rs``, ``alias_mapping.rs``,
``collections_ops.rs``, ``toc/create_collection.rs``).

Versioning: every op carries ``"v": OP_VERSION``. A node refuses (as an error result,
identically on every node of that version) an op of a version it does not know. An
op shape that older nodes cannot apply must only be proposed once every node runs
the new code (PySyncObj's ``setCodeVersion`` is the switch for that).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from cluster.replicas import (
    STATES,
    ReplicaState,
    can_be_source_of_truth,
    ids_used,
    placement_problem,
    replica_number,
    shard_factor,
)
from shard.types import BadInput, Conflict, NotFound, ShoalError

OP_VERSION = 1

JSON = Any


def empty_state() -> dict[str, Any]:
    return {"collections": {}, "aliases": {}, "version": 0}


# ---------------------------------------------------------------------------
# Results.
# ---------------------------------------------------------------------------

_ERRORS: dict[str, type[ShoalError]] = {"bad_input": BadInput, "not_found": NotFound, "conflict": Conflict}


@dataclass(frozen=True)
class OpResult:
    """What applying an op gave: ``ok`` with a JSON ``value`` (Qdrant's ``result``,
    e.g. False for deleting a missing collection), or an error kind with Qdrant's text.
    Travels as JSON so that it can be compared across replicas."""

    ok: bool
    value: JSON = True
    error: str | None = None  # "bad_input" | "not_found" | "conflict"
    message: str = ""

    @staticmethod
    def success(value: JSON = True) -> OpResult:
        return OpResult(True, value)

    @staticmethod
    def failure(kind: str, message: str) -> OpResult:
        if kind not in _ERRORS:
            raise ValueError(f"unknown error kind {kind!r}")
        return OpResult(False, None, kind, message)

    def to_json(self) -> dict[str, Any]:
        if self.ok:
            return {"ok": True, "value": self.value}
        return {"ok": False, "error": self.error, "message": self.message}

    @staticmethod
    def from_json(data: dict[str, Any]) -> OpResult:
        if data.get("ok"):
            return OpResult.success(data.get("value", True))
        return OpResult.failure(data["error"], data["message"])

    def unwrap(self) -> JSON:
        """The value, or the matching ``shard.types`` error raised (the gateway maps
        BadInput to 400, NotFound to 404, Conflict to 409)."""
        if self.ok:
            return self.value
        raise _ERRORS[self.error](self.message)


# ---------------------------------------------------------------------------
# Operations.
# ---------------------------------------------------------------------------


class MetaOp:
    """Base of the operations. ``to_json`` gives the dict that is proposed."""

    kind: ClassVar[str]

    def body(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return {"v": OP_VERSION, "type": self.kind, **self.body()}


@dataclass(frozen=True)
class CreateCollection(MetaOp):
    """``config`` is the collection's config as the gateway stores it; ``placement``
    says where its shards live (chosen by the proposer). Both are opaque JSON here."""

    kind: ClassVar[str] = "create_collection"
    name: str
    config: dict[str, Any]
    placement: JSON = None

    def body(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "placement": self.placement}


@dataclass(frozen=True)
class DeleteCollection(MetaOp):
    kind: ClassVar[str] = "delete_collection"
    name: str

    def body(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass(frozen=True)
class UpdateCollection(MetaOp):
    """Qdrant's config diffs: ``diff`` is merged into the config recursively, a null
    value meaning "unchanged"; ``replace`` sets top-level keys wholesale (null removes
    the key), for settings whose diff replaces rather than merges (quantization)."""

    kind: ClassVar[str] = "update_collection"
    name: str
    diff: dict[str, Any] = field(default_factory=dict)
    replace: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"name": self.name, "diff": self.diff, "replace": self.replace}


@dataclass(frozen=True)
class CreateAlias(MetaOp):
    kind: ClassVar[str] = "create_alias"
    alias: str
    collection: str

    def body(self) -> dict[str, Any]:
        return {"alias": self.alias, "collection": self.collection}


@dataclass(frozen=True)
class DeleteAlias(MetaOp):
    kind: ClassVar[str] = "delete_alias"
    alias: str

    def body(self) -> dict[str, Any]:
        return {"alias": self.alias}


@dataclass(frozen=True)
class RenameAlias(MetaOp):
    kind: ClassVar[str] = "rename_alias"
    old: str
    new: str

    def body(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new}


AliasAction = Union[CreateAlias, DeleteAlias, RenameAlias]


@dataclass(frozen=True)
class ChangeAliases(MetaOp):
    """POST /collections/aliases: its actions in order, as one log entry."""

    kind: ClassVar[str] = "change_aliases"
    actions: tuple[AliasAction, ...]

    def body(self) -> dict[str, Any]:
        return {"actions": [a.to_json() for a in self.actions]}


# -- replicas (docs/cluster.md). Each names the collection's incarnation: a
# decision about an earlier life of a re-created collection is refused.


@dataclass(frozen=True)
class AddReplica(MetaOp):
    """A new replica of one shard, on a node that holds none of that shard yet. Its id
    is ``r<n>`` and new to the shard: never one it listed before (``next_replica_id``)."""

    kind: ClassVar[str] = "add_replica"
    collection: str
    incarnation: str
    shard: int
    replica: str
    node: str
    state: str = ReplicaState.PARTIAL.value

    def body(self) -> dict[str, Any]:
        return {"collection": self.collection, "incarnation": self.incarnation, "shard": self.shard,
                "replica": self.replica, "node": self.node, "state": self.state}


@dataclass(frozen=True)
class SetReplicaState(MetaOp):
    """A replica's new state; with ``from_state``, only if it is in that state now
    (else dismissed: result False, nothing changed), as Qdrant's from_state."""

    kind: ClassVar[str] = "set_replica_state"
    collection: str
    incarnation: str
    shard: int
    replica: str
    state: str
    from_state: str | None = None

    def body(self) -> dict[str, Any]:
        return {"collection": self.collection, "incarnation": self.incarnation, "shard": self.shard,
                "replica": self.replica, "state": self.state, "from_state": self.from_state}


@dataclass(frozen=True)
class _OneReplica(MetaOp):
    """An op about one replica and nothing else."""

    collection: str
    incarnation: str
    shard: int
    replica: str

    def body(self) -> dict[str, Any]:
        return {"collection": self.collection, "incarnation": self.incarnation, "shard": self.shard,
                "replica": self.replica}


@dataclass(frozen=True)
class RemoveReplica(_OneReplica):
    """Drop a replica (not the primary: promote another first)."""

    kind: ClassVar[str] = "remove_replica"


@dataclass(frozen=True)
class SetPrimary(MetaOp):
    """Make an active replica the shard's primary; ``epoch`` must be the shard's
    epoch plus one (two controllers racing cannot both win)."""

    kind: ClassVar[str] = "set_primary"
    collection: str
    incarnation: str
    shard: int
    replica: str
    epoch: int

    def body(self) -> dict[str, Any]:
        return {"collection": self.collection, "incarnation": self.incarnation, "shard": self.shard,
                "replica": self.replica, "epoch": self.epoch}


@dataclass(frozen=True)
class RequestTransfer(MetaOp):
    """The cluster API's move_shard (``move``) or replicate_shard: a new ``partial``
    replica ``replica`` on ``node``, to be copied from ``source`` (an active replica).
    A move marks the source ``leaving``; a copy raises the shard's own factor by one.
    The controller carries it out (transfer, activation, then the source trimmed)."""

    kind: ClassVar[str] = "request_transfer"
    collection: str
    incarnation: str
    shard: int
    replica: str
    node: str
    source: str
    move: bool

    def body(self) -> dict[str, Any]:
        return {"collection": self.collection, "incarnation": self.incarnation, "shard": self.shard,
                "replica": self.replica, "node": self.node, "source": self.source, "move": self.move}


@dataclass(frozen=True)
class DropReplica(_OneReplica):
    """The cluster API's drop_replica: the shard keeps one replica fewer, and this one is
    the one to go (a dead one at once; an active one once the controller has handed the
    primary over, if it is the primary)."""

    kind: ClassVar[str] = "drop_replica"


@dataclass(frozen=True)
class AbortTransfer(_OneReplica):
    """The cluster API's abort_transfer: the ``partial`` replica ``replica`` (the
    transfer's target) is removed, and what its request changed is undone (a move's
    source stays; a copy's raised factor is lowered again)."""

    kind: ClassVar[str] = "abort_transfer"


ReplicaOp = Union[AddReplica, SetReplicaState, RemoveReplica, SetPrimary, RequestTransfer, DropReplica, AbortTransfer]
_REPLICA_OPS = ("add_replica", "set_replica_state", "remove_replica", "set_primary", "request_transfer",
                "drop_replica", "abort_transfer")

_OPS: dict[str, type[MetaOp]] = {
    cls.kind: cls
    for cls in (CreateCollection, DeleteCollection, UpdateCollection, CreateAlias, DeleteAlias,
                RenameAlias, ChangeAliases, AddReplica, SetReplicaState, RemoveReplica, SetPrimary,
                RequestTransfer, DropReplica, AbortTransfer)
}


class MalformedOp(ValueError):
    """The JSON is not an operation of this vocabulary and version."""


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise MalformedOp(f"field `{key}` must be a string")
    return value


def _obj(data: dict[str, Any], key: str, default: Any = None) -> dict[str, Any]:
    value = data.get(key, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, dict):
        raise MalformedOp(f"field `{key}` must be an object")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedOp(f"field `{key}` must be a non-negative integer")
    return value


def _state(data: dict[str, Any], key: str, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if value not in STATES:
        raise MalformedOp(f"field `{key}` must be a replica state")
    return value


def _replica_op(kind: str, data: dict[str, Any]) -> MetaOp:
    where = (_str(data, "collection"), _str(data, "incarnation"), _int(data, "shard"), _str(data, "replica"))
    if kind == "add_replica":
        return AddReplica(*where, _str(data, "node"), _state(data, "state"))
    if kind == "set_replica_state":
        return SetReplicaState(*where, _state(data, "state"), _state(data, "from_state", optional=True))
    if kind == "remove_replica":
        return RemoveReplica(*where)
    if kind == "request_transfer":
        move = data.get("move")
        if not isinstance(move, bool):
            raise MalformedOp("field `move` must be a boolean")
        return RequestTransfer(*where, _str(data, "node"), _str(data, "source"), move)
    if kind == "drop_replica":
        return DropReplica(*where)
    if kind == "abort_transfer":
        return AbortTransfer(*where)
    return SetPrimary(*where, _int(data, "epoch"))


def op_from_json(data: Any) -> MetaOp:
    """Parses an op's JSON dict. MalformedOp for anything else."""
    if not isinstance(data, dict):
        raise MalformedOp("an operation must be a JSON object")
    if data.get("v") != OP_VERSION:
        raise MalformedOp(f"unsupported operation version {data.get('v')!r}")
    kind = data.get("type")
    if kind == "create_collection":
        return CreateCollection(_str(data, "name"), _obj(data, "config"), data.get("placement"))
    if kind == "delete_collection":
        return DeleteCollection(_str(data, "name"))
    if kind == "update_collection":
        return UpdateCollection(_str(data, "name"), _obj(data, "diff", {}), _obj(data, "replace", {}))
    if kind == "create_alias":
        return CreateAlias(_str(data, "alias"), _str(data, "collection"))
    if kind == "delete_alias":
        return DeleteAlias(_str(data, "alias"))
    if kind == "rename_alias":
        return RenameAlias(_str(data, "old"), _str(data, "new"))
    if kind in _REPLICA_OPS:
        return _replica_op(kind, data)
    if kind == "change_aliases":
        actions = data.get("actions")
        if not isinstance(actions, list):
            raise MalformedOp("field `actions` must be a list")
        parsed = tuple(op_from_json(a) for a in actions)
        if not all(isinstance(a, (CreateAlias, DeleteAlias, RenameAlias)) for a in parsed):
            raise MalformedOp("`actions` may hold only alias operations")
        return ChangeAliases(parsed)
    raise MalformedOp(f"unknown operation type {kind!r}")


# ---------------------------------------------------------------------------
# apply.
# ---------------------------------------------------------------------------


def resolve(state: dict[str, Any], name: str) -> str | None:
    """The collection ``name`` refers to: an alias first, then a collection name, as
    Qdrant's ``resolve_name`` does. None if neither exists."""
    target = state["aliases"].get(name, name)
    return target if target in state["collections"] else None


def apply(state: dict[str, Any], op: MetaOp | dict[str, Any]) -> tuple[dict[str, Any], OpResult]:
    """(new state, result) of applying ``op`` (an op or its JSON) to ``state``.

    Deterministic and pure: same inputs, same outputs, on every node; inputs are not
    modified (the new state shares untouched parts with the old, which callers must
    treat as immutable)."""
    if isinstance(op, dict):
        try:
            op = op_from_json(op)
        except MalformedOp as e:
            return state, OpResult.failure("bad_input", str(e))
    new = {"collections": dict(state["collections"]), "aliases": dict(state["aliases"]),
           "version": state["version"]}
    result, changed = _apply(new, op)
    if not result.ok and not isinstance(op, ChangeAliases):
        return state, result
    if changed:
        new["version"] += 1
        return new, result
    return state, result


def _apply(s: dict[str, Any], op: MetaOp) -> tuple[OpResult, bool]:
    """Applies ``op`` to ``s`` (a fresh top level the caller owns): (result, changed)."""
    collections, aliases = s["collections"], s["aliases"]
    if isinstance(op, CreateCollection):
        problem = placement_problem(op.placement, op.config.get("params", {}).get("shard_number", 1))
        if problem is not None:
            return OpResult.failure("bad_input", f"placement of `{op.name}`: {problem}"), False
        if op.name in collections:
            return OpResult.failure("conflict", f"Collection `{op.name}` already exists!"), False
        if op.name in aliases:
            return OpResult.failure(
                "bad_input",
                f"Can't create collection with name {op.name}. Alias with the same name already exists"), False
        collections[op.name] = {"config": copy.deepcopy(op.config), "placement": copy.deepcopy(op.placement)}
        return OpResult.success(True), True
    if isinstance(op, DeleteCollection):
        # Qdrant answers `false` for a collection that does not exist, and drops the
        # collection's aliases first either way.
        dropped = [a for a, c in aliases.items() if c == op.name]
        for a in dropped:
            del aliases[a]
        existed = collections.pop(op.name, None) is not None
        return OpResult.success(existed), existed or bool(dropped)
    if isinstance(op, UpdateCollection):
        return _update(collections, aliases, op)
    if isinstance(op, (AddReplica, SetReplicaState, RemoveReplica, SetPrimary, RequestTransfer, DropReplica,
                       AbortTransfer)):
        return _replica(collections, op)
    if isinstance(op, ChangeAliases):
        # Qdrant's update_aliases applies the actions one by one and stops at the
        # first error, keeping the ones before it.
        changed = False
        for action in op.actions:
            result, did = _alias(collections, aliases, action)
            changed |= did
            if not result.ok:
                return result, changed
        return OpResult.success(True), changed
    return _alias(collections, aliases, op)


def _alias(collections: dict, aliases: dict, op: MetaOp) -> tuple[OpResult, bool]:
    if isinstance(op, CreateAlias):
        if op.collection not in collections:
            return OpResult.failure("not_found", f"Collection `{op.collection}` doesn't exist!"), False
        if op.alias in collections:
            return OpResult.failure("conflict", f"Collection `{op.alias}` already exists!"), False
        changed = aliases.get(op.alias) != op.collection
        aliases[op.alias] = op.collection  # an existing alias is re-pointed, as in Qdrant
        return OpResult.success(True), changed
    if isinstance(op, DeleteAlias):
        # Deleting a missing alias is not an error in Qdrant.
        return OpResult.success(True), aliases.pop(op.alias, None) is not None
    if isinstance(op, RenameAlias):
        if op.old not in aliases:
            return OpResult.failure("not_found", f"Alias {op.old} does not exists!"), False
        if op.new in collections:
            # Qdrant does not check this on rename; Shoal keeps "no name is both an
            # alias and a collection" true, with create_alias's error.
            return OpResult.failure("conflict", f"Collection `{op.new}` already exists!"), False
        target = aliases.pop(op.old)
        aliases[op.new] = target
        return OpResult.success(True), op.old != op.new
    return OpResult.failure("bad_input", f"unsupported operation {type(op).__name__}"), False


def _update(collections: dict, aliases: dict, op: UpdateCollection) -> tuple[OpResult, bool]:
    name = aliases.get(op.name, op.name)  # Qdrant resolves aliases for updates
    if name not in collections:
        return OpResult.failure("not_found", f"Collection `{op.name}` doesn't exist!"), False
    record = collections[name]
    config = record["config"]
    vectors_diff = op.diff.get("vectors")
    if isinstance(vectors_diff, dict) and isinstance(config.get("vectors"), dict):
        for vector_name in vectors_diff:
            if vector_name not in config["vectors"]:
                # Qdrant's VectorsConfigDiff::check_vector_names
                return OpResult.failure("bad_input", f"Not existing vector name error: {vector_name}"), False
    new_config = merge_diff(config, op.diff)
    for key, value in op.replace.items():
        if value is None:
            new_config.pop(key, None)
        else:
            new_config[key] = copy.deepcopy(value)
    if new_config == config:
        return OpResult.success(True), False
    placement = record.get("placement") or {}
    factor = lambda c: c.get("params", {}).get("replication_factor")  # noqa: E731
    if factor(new_config) != factor(config) and isinstance(placement.get("shards"), list):
        # A new replication_factor applies to every shard again (replicate_shard and
        # drop_replica set a shard's own).
        placement = {**placement, "shards": [{k: v for k, v in s.items() if k != "factor"}
                                             for s in placement["shards"]]}
    collections[name] = {**record, "config": new_config, "placement": placement}
    return OpResult.success(True), True


def _replica(collections: dict, op: ReplicaOp) -> tuple[OpResult, bool]:
    """Apply a replica op to a copy of the collection's record (copy on write)."""
    record = collections.get(op.collection)
    placement = (record or {}).get("placement") or {}
    if record is None or placement.get("incarnation") != op.incarnation:
        return OpResult.failure("not_found", f"Collection `{op.collection}` doesn't exist!"), False
    shards = placement.get("shards")
    if not isinstance(shards, list) or not 0 <= op.shard < len(shards):
        return OpResult.failure("not_found", f"Shard {op.shard} of `{op.collection}` doesn't exist!"), False
    shard = copy.deepcopy(shards[op.shard])
    replicas = shard["replicas"]
    factor = shard_factor(shard, record["config"].get("params", {}).get("replication_factor") or 1)
    staying = sum(r["state"] != ReplicaState.DEAD and not r.get("leaving") for r in replicas.values())
    if isinstance(op, RequestTransfer):
        problem = _new_replica_problem(shard, op.shard, op.replica, op.node)
        if problem is not None:
            return problem, False
        if replicas.get(op.source, {}).get("state") != ReplicaState.ACTIVE:
            return OpResult.failure("bad_input", f"Replica {op.source} of shard {op.shard} is not active"), False
        replicas[op.replica] = {"node": op.node, "state": ReplicaState.PARTIAL.value, "source": op.source,
                                "move": op.move}
        shard["next_replica"] = replica_number(op.replica) + 1
        if op.move:
            replicas[op.source]["leaving"] = True
        else:  # one more than the shard keeps
            shard["factor"] = max(factor, staying) + 1
    elif isinstance(op, AddReplica):
        problem = _new_replica_problem(shard, op.shard, op.replica, op.node)
        if problem is not None:
            return problem, False
        replicas[op.replica] = {"node": op.node, "state": op.state}
        shard["next_replica"] = replica_number(op.replica) + 1
    elif op.replica not in replicas:
        return OpResult.failure("not_found", f"Replica {op.replica} of shard {op.shard} doesn't exist!"), False
    elif isinstance(op, SetReplicaState):
        current = replicas[op.replica]["state"]
        if op.from_state is not None and current != op.from_state:
            return OpResult.success(False), False  # dismissed, as Qdrant's from_state
        if current == op.state:
            return OpResult.success(True), False
        replicas[op.replica]["state"] = op.state
    elif isinstance(op, DropReplica):  # one fewer than the shard keeps
        shard["factor"] = max(1, min(factor, staying) - 1)
        if replicas[op.replica]["state"] == ReplicaState.DEAD and shard["primary"] != op.replica:
            shard["next_replica"] = ids_used(shard)
            del replicas[op.replica]
        else:
            replicas[op.replica]["leaving"] = True
    elif isinstance(op, AbortTransfer):
        target = replicas[op.replica]
        if target["state"] != ReplicaState.PARTIAL or op.replica == shard["primary"]:
            return OpResult.failure("not_found", f"Replica {op.replica} of shard {op.shard} is not the target of "
                                                 "a transfer"), False
        source = replicas.get(target.get("source") or "")
        if target.get("move") and source is not None:
            source.pop("leaving", None)
        elif target.get("source") and "factor" in shard:
            shard["factor"] = max(1, factor - 1)
        shard["next_replica"] = ids_used(shard)
        del replicas[op.replica]
    elif isinstance(op, RemoveReplica):
        if shard["primary"] == op.replica:
            return OpResult.failure("bad_input", f"Replica {op.replica} is the primary of shard {op.shard}: "
                                                 "promote another first"), False
        shard["next_replica"] = ids_used(shard)  # kept past the removed id
        del replicas[op.replica]
    else:  # SetPrimary
        if op.epoch != shard["epoch"] + 1:
            return OpResult.failure("conflict", f"Shard {op.shard} is at epoch {shard['epoch']}, "
                                                f"not {op.epoch - 1}"), False
        if not can_be_source_of_truth(replicas[op.replica]["state"]):
            return OpResult.failure("bad_input", f"Replica {op.replica} is not active"), False
        shard["primary"], shard["epoch"] = op.replica, op.epoch
    new_shards = list(shards)
    new_shards[op.shard] = shard
    collections[op.collection] = {**record, "placement": {**placement, "shards": new_shards}}
    return OpResult.success(True), True


def _new_replica_problem(shard: dict[str, Any], index: int, replica: str, node: str) -> OpResult | None:
    """Why ``replica`` cannot be added to ``shard`` on ``node`` (None when it can)."""
    number = replica_number(replica)
    if replica in shard["replicas"]:
        return OpResult.failure("conflict", f"Replica {replica} of shard {index} already exists")
    if number is None:
        return OpResult.failure("bad_input", f"Replica id {replica!r} is not r0, r1, ...")
    if number < ids_used(shard):
        # The id names an actor and its storage: a stop asked for the replica that had it
        # would stop the new one and delete its storage.
        return OpResult.failure("conflict", f"Replica id {replica} of shard {index} was used before")
    if any(r["node"] == node for r in shard["replicas"].values()):
        return OpResult.failure("bad_input", f"Shard {index} already has a replica on node {node}")
    return None


def merge_diff(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``diff`` merged in: objects recursively, null = keep,
    anything else replaces (Qdrant's ``DiffConfig::update``)."""
    out = copy.deepcopy(base)
    for key, value in diff.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_diff(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
