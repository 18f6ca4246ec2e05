"""A running collection as the gateway sees it: its config and its shards.

Kept free of Ray so that HTTP worker processes can hold the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cluster.placement import shard_of
from cluster.shard_client import ShardUnavailable
from shard.types import (
    DEFAULT_VECTOR,
    HnswConfig,
    NotFound,
    OptimizersConfig,
    Quantization,
    ShardConfig,
    SparseVectorParams,
    VectorParams,
)

if TYPE_CHECKING:
    from cluster.shard_client import ShardClient


def shard_config_of(config: dict[str, Any]) -> ShardConfig:
    """The ShardConfig a collection's config (Qdrant's CollectionConfig JSON) implies:
    a vector with a ``multivector_config`` is a multivector (``ShardConfig.multi``)."""
    params = config["params"]
    vectors = params["vectors"]
    if "size" in vectors:
        named = {DEFAULT_VECTOR: VectorParams.from_json(vectors)}
    else:
        named = {name: VectorParams.from_json(v) for name, v in vectors.items()}
    return ShardConfig(
        vectors={name: p for name, p in named.items() if not p.is_multi},
        hnsw=HnswConfig().updated(config.get("hnsw_config")),
        optimizers=OptimizersConfig().updated(config.get("optimizer_config")),
        on_disk_payload=params.get("on_disk_payload", True),
        sparse={name: SparseVectorParams.from_json(p) for name, p in (params.get("sparse_vectors") or {}).items()},
        multi={name: p for name, p in named.items() if p.is_multi},
        quantization=Quantization.from_json(config.get("quantization_config")),
    )


def not_found(name: str) -> NotFound:
    return NotFound(f"Collection `{name}` doesn't exist!")


@dataclass
class Collection:
    name: str
    config: dict[str, Any]
    incarnation: str
    shards: list = field(default_factory=list)  # ShardClient per shard, in shard order
    shard_config: ShardConfig = field(init=False)

    def __setattr__(self, key: str, value: Any) -> None:
        super().__setattr__(key, value)
        if key == "config":  # derived once per config change, read on every request
            super().__setattr__("shard_config", shard_config_of(value))

    def shard_for(self, point_id) -> ShardClient:
        return self.shards[shard_of(point_id, len(self.shards))]


@dataclass(frozen=True)
class Unavailable:
    """A collection the metadata holds whose shards could not be started (at
    start-up, say, after its files were damaged). It is listed and can be deleted;
    every other request on it answers 503 with ``reason``."""

    config: dict[str, Any]
    reason: str


class RunningCollections:
    """Lookups shared by both registries: ``_running`` maps collection names to
    running collections, ``_unavailable`` names to the ones that could not start;
    subclasses say how a name or alias resolves."""

    _running: dict[str, Collection]
    _unavailable: dict[str, Unavailable]

    def _real_name(self, name: str) -> str | None:
        raise NotImplementedError

    def resolve(self, name: str) -> Collection:
        """The collection called ``name`` or aliased so; NotFound if there is none,
        ShardUnavailable if it exists but could not be started."""
        real = self._real_name(name)
        if real is not None and real in self._unavailable:
            raise ShardUnavailable(f"collection `{real}` could not be loaded: {self._unavailable[real].reason}")
        if real is None or real not in self._running:
            raise not_found(name)
        return self._running[real]

    def unavailable(self, name: str) -> tuple[str, Unavailable] | None:
        """(real name, record) when ``name`` (or the alias) is a collection that
        could not be started; None otherwise."""
        real = self._real_name(name)
        record = self._unavailable.get(real) if real is not None else None
        return None if record is None else (real, record)

    def names(self) -> list[str]:
        return sorted({*self._running, *self._unavailable})

    def running(self) -> list[Collection]:
        return [self._running[name] for name in sorted(self._running)]


class Registry(Protocol):
    """What the gateway needs of the collection registry: the control process's
    ``cluster.collections.Collections``, or an HTTP worker's read-only copy."""

    def resolve(self, name: str) -> Collection: ...

    def unavailable(self, name: str) -> tuple[str, Unavailable] | None: ...

    def names(self) -> list[str]: ...

    def running(self) -> list[Collection]: ...

    def aliases(self) -> dict[str, str]: ...

    async def create(self, name: str, config: dict[str, Any], fill=None) -> None: ...

    async def delete(self, name: str) -> bool: ...

    async def update(self, name: str, config: dict[str, Any]) -> None: ...

    async def change_aliases(self, actions: list[dict[str, Any]]) -> None: ...

    async def recover(self, name: str, config: dict[str, Any], shard_folders: list) -> None: ...
