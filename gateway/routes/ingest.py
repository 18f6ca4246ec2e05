"""``GET /collections/{name}/ingest/layout``: where ``shoal ingest`` writes (Shoal's
own route, not Qdrant's). The collection's shard config and incarnation, and each
shard's actor to write to (``cluster.ingest.layout.describe``): names, never
addresses or secrets. The control process answers it; an HTTP worker forwards it
there (its shards are sockets, not actors)."""

from __future__ import annotations

from aiohttp import web

from cluster.ingest.layout import PATH, describe
from gateway.routes.common import collection
from gateway.state import COLLECTIONS
from gateway.workers import Forward, RemoteCollections

routes = web.RouteTableDef()


@routes.get(PATH.replace("{name}", "{collection_name}"))
async def ingest_layout(request: web.Request):
    if isinstance(request.app[COLLECTIONS], RemoteCollections):
        raise Forward()
    return describe(collection(request))
