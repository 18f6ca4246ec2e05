"""Keys of the state the aiohttp application carries (aiohttp ``AppKey``s)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from cluster.collection import Registry
from gateway.metrics import Metrics
from gateway.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
COLLECTIONS = web.AppKey("collections", Registry)
METRICS = web.AppKey("metrics", Metrics)
READY = web.AppKey("ready", asyncio.Event)
CONTROL = web.AppKey("control", object)  # gateway.workers.Control, when HTTP workers run
WORKER_ARGV = web.AppKey("worker_argv", list)  # the flags workers are started with
CONTROL_DIR = web.AppKey("control_dir", object)  # in an HTTP worker: the control's folder (Path)
HEALTH = web.AppKey("health", object)  # in the control process: cluster.health.HealthMonitor
SNAPSHOTS = web.AppKey("snapshots", object)  # in the control process: cluster.snapshots.Snapshots
METADATA = web.AppKey("metadata", object)  # in the control process: cluster.metadata.MetadataStore
CONTROL_TASKS = web.AppKey("control_tasks", set)  # work a request started and left running (wait=false)
RATE_LIMITS = web.AppKey("rate_limits", object)  # gateway.rate_limits.RateLimits: this process's token buckets
