"""The shard as a Ray actor: a thin shell over ``shard.LocalShard``.

The actor holds no logic of its own: every call is delegated to the plain
``LocalShard`` (Ray Serve's ``ReplicaActor`` over ``UserCallableWrapper`` is
the model). The actor is threaded so that a long read does not queue the others
behind it; ``LocalShard`` does its own locking.
"""

from __future__ import annotations

import logging
from typing import Any

from threadpoolctl import threadpool_limits

from cluster.transport import ShardServer, machine_identity
from shard.local_shard import LocalShard
from shard.types import ShardConfig


class ShardActor:
    """Made a Ray actor by ``cluster.runtime``; plain here so it can be tested without Ray."""

    def __init__(self, path: str, config: dict[str, Any], options: dict[str, Any]):
        logging.basicConfig(level=options.get("log_level", "INFO"))
        # The process is this shard's alone: its BLAS (numpy's matrix products)
        # gets the shard's search threads, not one spinning thread per core.
        threadpool_limits(options.get("search_threads", 1), user_api="blas")
        self.shard = LocalShard(
            path,
            ShardConfig.from_json(config),
            indexing_threads=options.get("indexing_threads", 0),
            search_threads=options.get("search_threads", 1),
            wal_capacity_bytes=options.get("wal_capacity_bytes", 32 * 1024 * 1024),
        )

        self.server = ShardServer(self.shard)

    def ready(self) -> bool:
        """Answers once the shard is loaded; also the health monitor's ping.
        ``cluster.runtime`` sends it, like ``endpoint``, in the actor's control
        concurrency group, so that busy data calls cannot delay the answer."""
        return True

    def endpoint(self) -> tuple[str, str]:
        """(machine identity, socket address): where a gateway on this machine
        reaches the shard without a Ray call (see ``cluster.transport``)."""
        return machine_identity(), self.server.address

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one LocalShard method; the only entry point the gateway uses."""
        return getattr(self.shard, method)(*args, **kwargs)

    def close(self, take_snapshot: bool = True) -> None:
        self.server.close()
        self.shard.close(take_snapshot=take_snapshot)
