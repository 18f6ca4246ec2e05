"""The Ray task that writes one part: its rows checked, one upsert op per shard,
each sent to the shard's primary as a waiting write (the shard's log fsynced, as
REST's ``wait=true``), so that the driver records the part only once it is durable.

An unreplicated shard's actor gets the op as ``apply``, as the gateway sends it. A
replicated shard's primary gets it as ``replicate`` with the epoch and the peers the
server named (``cluster.replicator``): it sequences the write and forwards it in
order, as for a REST write. Should a peer not acknowledge, or the primary have been
replaced, the part fails (it is not recorded, and the next run writes it again):
marking a replica dead is a metadata change only a gateway proposes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster import runtime
from cluster.ingest import rows as row_checks
from cluster.ingest.sources import Columns, rows_of
from cluster.replicator import Peer
from cluster.shard_client import ShardUnavailable
from shard.types import ShardConfig

REPLICATE_TIMEOUT = 30.0  # seconds a primary waits for its peers before naming them failed

_actors: dict[str, Any] = {}  # actor name -> handle, kept for the worker process's life


@dataclass
class PartResult:
    loaded: int = 0
    rejects: list[tuple[int, str]] = field(default_factory=list)


def _actor(name: str):
    actor = _actors.get(name)
    if actor is None:
        actor = runtime.find_shard(name)
        if actor is None:
            raise ShardUnavailable(f"shard actor {name} is not running: is the collection being deleted or moved? "
                                   "Run the load again")
        _actors[name] = actor
    return actor


def _write(shard: dict[str, Any], op: dict[str, Any]) -> None:
    actor = _actor(shard["actor"])
    if "epoch" not in shard:
        runtime.call_blocking(actor, "apply", op, True)
        return
    peers = [Peer(p["replica"], runtime.endpoints_blocking(_actor(p["actor"]))) for p in shard["peers"]]
    outcome = runtime.call_blocking(actor, "replicate", op, True, shard["epoch"], peers, REPLICATE_TIMEOUT,
                                    timeout=REPLICATE_TIMEOUT + 60)
    if outcome.stale:
        raise ShardUnavailable(f"shard {shard['index']}: its primary was replaced while loading; run the load again")
    if outcome.failed:
        why = "; ".join(f"replica {r}: {text}" for r, text in sorted(outcome.failed.items()))
        raise ShardUnavailable(f"shard {shard['index']}: not every replica took a write ({why}); run the load again")


def write_part(layout: dict[str, Any], kind: str, batch: Any, start: int, columns: Columns,
               vectors: Any = None) -> PartResult:
    """Check and write the rows of one part (a Ray Data batch starting at row
    ``start``); its count of loaded points and its rejected rows."""
    config = ShardConfig.from_json(layout["shard_config"])
    if vectors is not None:
        vectors = vectors["data"]
    block, rows = rows_of(kind, batch, start, columns, vectors)
    checked = row_checks.check(rows, config, columns.hash_ids, block, start)
    ops = row_checks.upsert_ops(checked, config, len(layout["shards"]))
    for index, op in sorted(ops.items()):
        _write(layout["shards"][index], op)
    return PartResult(len(checked.ids), checked.rejects)
