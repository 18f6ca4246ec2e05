"""The shard as a Ray actor: a thin shell over ``shard.LocalShard``.

The actor holds no logic of its own: every call is delegated to the plain
``LocalShard`` (Ray Serve's ``ReplicaActor`` over ``UserCallableWrapper`` is
the model). The actor is threaded so that a long read does not queue the others
behind it; ``LocalShard`` does its own locking.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from threadpoolctl import threadpool_limits

from cluster.replicator import ServedShard
from cluster.transport import Endpoints, ShardServer, machine_identity
from shard import sparse
from shard.fileio import remove_tree
from shard.local_shard import LocalShard
from shard.types import ShardConfig

NODE_ADDRESS = "node"  # tcp_host meaning: the address of the node the actor runs on
log = logging.getLogger(__name__)


def _warm_sparse() -> None:
    try:
        sparse.warm_up()
    except Exception:  # the first search compiles or loads them then, and says why if it cannot
        log.warning("could not load the sparse search's compiled loops ahead", exc_info=True)


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
            indexing_niceness=options.get("indexing_niceness", 0),
            search_threads=options.get("search_threads", 1),
            wal_capacity_bytes=options.get("wal_capacity_bytes", 32 * 1024 * 1024),
        )
        if self.shard.sparse:
            # numba loads the sparse search's compiled loops from its cache in ~0.4 s:
            # done beside the shard's start, not in its first sparse search's time.
            threading.Thread(target=_warm_sparse, name="sparse-warm-up", daemon=True).start()

        # Other machines reach the shard over TCP only when the options carry both
        # a secret (``wire_secret``: random bytes, e.g. a key derived from the
        # cluster secret) and a host to bind (``tcp_host``; ``tcp_port``, 0 = any;
        # ``tcp_advertise_host``, what other machines dial if not ``tcp_host``).
        # Without them, as by default, there is no TCP listener.
        secret, tcp_host = options.get("wire_secret"), options.get("tcp_host")
        listen = secret is not None and tcp_host is not None
        if tcp_host == NODE_ADDRESS:
            tcp_host = self.node_address()
        # Served: the shard's methods plus replication (``cluster.replicator``).
        self.served = ServedShard(self.shard, secret)
        self.server = ShardServer(
            self.served,
            secret=secret if listen else None,
            tcp_host=tcp_host if listen else None,
            tcp_port=options.get("tcp_port", 0),
            advertise_host=options.get("tcp_advertise_host"),
            encrypt=bool(options.get("wire_encrypt")),  # service.enable_tls: encrypted too (cluster.wire)
        )

    def node_address(self) -> str:
        """The address other machines reach this one at (``cluster.runtime``
        answers with the Ray node's)."""
        raise NotImplementedError("only a shard actor started by cluster.runtime knows its node's address")

    def ready(self) -> bool:
        """Answers once the shard is loaded; also the health monitor's ping.
        ``cluster.runtime`` sends it, like ``endpoint``, in the actor's control
        concurrency group, so that busy data calls cannot delay the answer."""
        return True

    def endpoint(self) -> tuple[str, str]:
        """(machine identity, socket address): where a gateway on this machine
        reaches the shard without a Ray call (see ``cluster.transport``)."""
        return machine_identity(), self.server.address

    def endpoints(self) -> Endpoints:
        """Every way to reach the shard without a Ray call: its Unix socket (for a
        gateway on this machine) and, if it listens, its TCP (host, port)."""
        return self.server.endpoints()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one served method (LocalShard's, or replication's); the only entry
        point the gateway uses."""
        return getattr(self.served, method)(*args, **kwargs)

    def close(self, take_snapshot: bool = True) -> None:
        self.server.close()
        self.served.close(take_snapshot=take_snapshot)

    def destroy(self) -> None:
        """Close, and delete the shard's storage: the replica is no longer wanted."""
        self.close(take_snapshot=False)
        remove_tree(self.shard.path.parent, self.shard.path)
