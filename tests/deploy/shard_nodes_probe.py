"""Run by test_shard_nodes.py in a process of its own: a two-node Ray cluster on
127.0.0.1 (``ray.cluster_utils.Cluster``), the second node advertising a custom
resource; prints what ``runtime.shard_nodes`` returns with and without it, and the
node a shard started without a node lands on. One JSON line on stdout."""

from __future__ import annotations

import json
import sys
import tempfile

import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from cluster import runtime
from cluster.collection import Collection

RESOURCE = "shoal_storage_test"


def main() -> None:
    # Every node on 127.0.0.1, as the embedded instance (cluster.runtime.start): Ray binds
    # to the machine's external address unless told this is a one-machine cluster.
    ray_constants.ENABLE_RAY_CLUSTER = False
    args = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
    try:
        storage = cluster.add_node(**args, resources={RESOURCE: 1})
        ray.init(address=cluster.address, logging_level="WARNING", namespace="shoal")
        head = ray.get_runtime_context().get_node_id()
        everyone = runtime.shard_nodes()
        runtime.place_shards_on(RESOURCE)
        marked = runtime.shard_nodes()
        config = {"params": {"vectors": {"size": 2, "distance": "Dot"}, "shard_number": 1}}
        shard_config = Collection("c", config, "0" * 32).shard_config.to_json()
        with tempfile.TemporaryDirectory() as folder:
            actor = runtime.spawn_shard("shard-probe", folder + "/shard-0", shard_config, {}, node=None)
            ray.get(actor.ready.remote(), timeout=120)
            placed = ray._private.state.actors(actor._actor_id.hex())["Address"]["NodeID"]
            ray.kill(actor, no_restart=True)
        print(json.dumps({"head": head, "storage": storage.node_id, "all": everyone, "marked": marked,
                          "placed": placed}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
