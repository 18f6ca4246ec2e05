"""Qdrant's distributed-mode endpoints: ``GET /cluster``, ``GET`` and ``POST
/collections/{name}/cluster``. ``gateway.cluster_info`` builds the answers;
this module gathers what they need (the Raft's state, the collection's placement,
each replica's digest). In an HTTP worker they are forwarded to the control
process, which runs the Raft."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from cluster import runtime
from cluster.collection import Collection
from cluster.peers import peer_id
from cluster.shard_client import ShardTimeout, ShardUnavailable
from cluster.topology import Layout, layout
from gateway import cluster_info
from gateway.params import wait_timeout
from gateway.routes.common import body, collection
from gateway.state import METADATA
from gateway.workers import Forward
from shard.digest import ShardDigest

if TYPE_CHECKING:
    from cluster.metadata import MetadataStore

routes = web.RouteTableDef()
PATH = "/collections/{collection_name}/cluster"


def _metadata(request: web.Request) -> MetadataStore:
    store = request.app.get(METADATA)
    if store is None:
        raise Forward()  # an HTTP worker: the control process runs the Raft
    return store


def _layout(store: MetadataStore, coll: Collection) -> Layout:
    record = store.collection(coll.name) or {}
    return layout(record.get("placement"), len(coll.shards), peer_id(store.self_address))


async def _digests(coll: Collection, where: Layout) -> list[ShardDigest | None]:
    """Each replica's digest, None for one that did not answer or is not running
    (a dead replica on a lost node)."""

    async def one(replica) -> ShardDigest | None:
        if replica.shard_id >= len(coll.shards):
            return None
        shard = coll.shards[replica.shard_id]
        handles = getattr(shard, "replicas", None)  # a replicated shard: each replica on its own
        handle = shard if handles is None else handles.get(replica.replica)
        if handle is None or (handles is None and len(where.replicas_of(replica.shard_id)) != 1):
            return None
        try:
            return await handle.digest()
        except (ShardUnavailable, ShardTimeout):
            return None

    return list(await asyncio.gather(*(one(r) for r in where.replicas)))


@routes.get("/cluster")
async def cluster_status(request: web.Request):
    return cluster_info.cluster_status(_metadata(request).raft_status(), time.time())


@routes.get(PATH)
async def collection_cluster_info(request: web.Request):
    store = _metadata(request)
    coll = collection(request)
    where = _layout(store, coll)
    return cluster_info.collection_cluster_info(peer_id(store.self_address), where, await _digests(coll, where))


@routes.post(PATH)
async def update_collection_cluster(request: web.Request):
    data = await body(request, "ClusterOperations")
    wait_timeout(request)
    store = _metadata(request)
    coll = collection(request)
    (kind, args), = data.items()
    where = _layout(store, coll)
    named = request.match_info["collection_name"]
    record = store.collection(coll.name) or {}
    placement = record.get("placement") or {}
    replicated = isinstance(placement.get("shards"), list)
    nodes = {peer_id(n): n for n in await asyncio.to_thread(runtime.shard_nodes)} if replicated else {}
    members = {peer_id(address) for address in (store.self_address, *store.partners)} | where.peers() | set(nodes)
    cluster_info.check_operation(kind, args, named, where, members)
    op = cluster_info.plan_operation(kind, args, coll.name, placement.get("incarnation"), placement, where, nodes)
    await asyncio.to_thread(store.propose, op)
    return True
