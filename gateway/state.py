"""Keys of the state the aiohttp application carries (aiohttp ``AppKey``s)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from cluster.collections import Collections
from gateway.metrics import Metrics
from gateway.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
COLLECTIONS = web.AppKey("collections", Collections)
METRICS = web.AppKey("metrics", Metrics)
READY = web.AppKey("ready", asyncio.Event)
