"""What the driver learns from the server: a collection's shard config, its
incarnation, and for each shard the actor to write to (the primary, with its epoch
and peers on a replicated collection).

The server answers ``GET /collections/{name}/ingest/layout`` with ``describe``
(``gateway.routes.ingest``); the driver asks with ``fetch`` (plain ``urllib``: one
request, sending ``api-key`` when given). Actor names are built from the
incarnation, as ``cluster.collections`` names them; nothing secret is sent.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from cluster import routing
from cluster.replica_set import ReplicaSet

PATH = "/collections/{name}/ingest/layout"


class LayoutError(RuntimeError):
    """The server could not say where to write; the message says what to change."""


def describe(collection) -> dict[str, Any]:
    """The layout of a running ``cluster.collection.Collection``."""
    shards = []
    for index, shard in enumerate(collection.shards):
        base = f"shard-{collection.incarnation}-{index}"
        if isinstance(shard, ReplicaSet):
            targets = routing.write_targets(shard.shard, shard.shard["epoch"], shard_id=index)
            shards.append({"index": index, "actor": f"{base}-{targets.primary}", "epoch": targets.epoch,
                           "primary": targets.primary,
                           "peers": [{"replica": r, "actor": f"{base}-{r}"} for r in targets.forwards]})
        else:
            shards.append({"index": index, "actor": base})
    return {"collection": collection.name, "incarnation": collection.incarnation,
            "shard_config": collection.shard_config.to_json(), "shards": shards}


def fetch(url: str, collection: str, api_key: str | None, timeout: float = 30.0) -> dict[str, Any]:
    """The layout of ``collection`` from the server at ``url``."""
    address = url.rstrip("/") + PATH.format(name=urllib.parse.quote(collection, safe=""))
    request = urllib.request.Request(address, headers={"api-key": api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)["result"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise LayoutError(f"collection `{collection}` does not exist at {url}: create it first "
                              "(PUT /collections/{name}), or name another with --collection") from None
        if exc.code in (401, 403):
            raise LayoutError(f"{url} refused the request ({exc.code}): give its API key with --api-key") from None
        raise LayoutError(f"{url} answered {exc.code} for collection `{collection}`: {_reason(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LayoutError(f"cannot reach Shoal at {url} ({reason}): is it running? Name it with --url") from None


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["status"]["error"]
    except Exception:  # noqa: BLE001 - any body: the status line says enough
        return exc.reason
