"""Every ``ray.*`` call Shoal makes lives here, so the rest can be read (and
tested) without Ray.

Without an address Shoal starts its own Ray instance and never attaches to
another one: ``ray.init()`` alone would join any cluster another program left
running on the machine (``ray start`` writes its address under the system's
temp folder), and the server would die with it. The embedded instance listens
on 127.0.0.1 only (by default Ray picks the machine's external address), keeps
its session files in a private folder removed at shutdown, and authenticates
with a token of its own rather than the user's shared ``~/.ray/auth_token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray._private import ray_constants
from ray._raylet import Config
from ray.core.generated import gcs_pb2
from ray.exceptions import ActorUnavailableError, ActorUnschedulableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster import actor as shard_actor
from cluster.shard_client import NOT_STARTED, ShardUnavailable

log = logging.getLogger(__name__)


class ShardActor(shard_actor.ShardActor):
    """The shard actor as Ray runs it (its processes are named ``ray::ShardActor``)."""

    def node_address(self) -> str:
        return ray.util.get_node_ip_address()


# Control calls (ready, endpoint, health pings) get threads of their own in each
# shard actor, so that long data calls filling the default group cannot hold
# them up (Ray Serve's replica does the same).
CONTROL_GROUP = "control"
RemoteShardActor = ray.remote(concurrency_groups={CONTROL_GROUP: 2})(ShardActor)
RESTART_WAIT = 60.0  # seconds an idempotent call waits for a restarting actor
CLOSE_TIMEOUT = 60.0  # seconds a shard may take to close cleanly (snapshot) at shutdown
SHUTDOWN_TIMEOUT = 15.0  # seconds ray.shutdown() may take before the head processes are killed
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# Ray ends a process (std::_Exit, nothing cleaned up) whose GCS client has not
# reconnected within this many seconds; 60 by default.
GCS_RECONNECT_VAR = "RAY_gcs_rpc_server_reconnect_timeout_s"
GCS_RECONNECT_MARGIN = 30.0  # seconds the driver outlives the gateway's own grace
NODES_TIMEOUT = 60.0  # seconds the GCS has to list the nodes (as Ray bounds its own requests)
FOLDER_PREFIX = "shoal-ray-"  # the embedded instance's folder, in the system's temp folder

# What a health ping found (``ping``); ``cluster.health`` reads the same words.
ANSWERED, SILENT, STARTING, DEAD = "answered", "silent", "starting", "dead"


@dataclass
class _Embedded:
    """The Ray instance this process started: its head processes and its folder."""

    root: Path
    node: Any  # ray._private.node.Node


_embedded: _Embedded | None = None
_node_id = None  # this process's Ray node (ray.NodeID), for liveness checks


def start(address: str | None, num_cpus: int | None = None, node_ip_address: str | None = None,
          head_down_grace: float | None = None, connect_timeout: float = 30.0) -> None:
    """Join the Ray cluster at ``address`` (through the node at ``node_ip_address``
    if given; RayUnreachable when its head does not answer within
    ``connect_timeout`` s), or start a private one on 127.0.0.1. Joined, this
    process is to outlive an unreachable head (GCS) for ``head_down_grace`` seconds."""
    global _embedded, _node_id
    if ray.is_initialized():
        return
    # The shards' log lines reach this process's log through Ray: no terminal colours.
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if address:
        reachable(address, connect_timeout)
        if head_down_grace is not None:
            _outlive_the_head(head_down_grace)
        _join(address, node_ip_address)
        try:
            _node_id = ray.NodeID.from_hex(ray.get_runtime_context().get_node_id())
        except Exception:  # noqa: BLE001 - a Ray Client (ray://) has no node: no GCS checks
            _node_id = None
        return
    _remove_stale_folders()
    # A short private folder: Ray's Unix socket paths live under it and must stay
    # under ~107 bytes, so not under the storage folder, whose path may be long.
    # mkdtemp makes it 0700; Ray makes the session folder inside it world-writable,
    # so the session goes one level down, behind this folder's permissions.
    root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    started = process_started(os.getpid())
    if started is not None:  # who owns it, for _remove_stale_folders after a crash
        (root / "owner").write_text(f"{os.getpid()} {started}")
    _private_token()
    # On Linux Ray binds to the machine's external address unless told this is a
    # single-machine cluster; this flag (meant for Windows/macOS) does exactly that.
    # Ray's child processes read it from the environment when they start; this
    # process read it when it imported Ray, so its copy is set as well.
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray starts its workers at niceness 15, meant for batch tasks beside a
    # driver; a shard actor serves requests and must not yield its core to
    # the gateway it answers (100k x 384, 32 clients: ~2,100 -> ~2,700 req/s).
    os.environ.setdefault(ray_constants.RAY_WORKER_NICENESS, "0")
    try:
        ray.init(
            address="local",  # always a new instance: never attach to one found on the machine
            _temp_dir=str(root / "r"),
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            num_cpus=num_cpus,
            logging_level="WARNING",
            namespace="shoal",
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    _embedded = _Embedded(root, ray._private.worker._global_node)
    _node_id = ray.NodeID.from_hex(ray.get_runtime_context().get_node_id())
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":
        log.warning("the local Ray instance runs on %s, not on loopback", node_ip)


def _outlive_the_head(grace: float) -> None:
    """Have Ray keep this driver alive while its GCS is unreachable for a little
    longer than ``grace`` (the gateway decides when to give up, with one clear
    line, rather than Ray's _Exit after its default 60 s). Set in the
    environment before ``ray.init``, when the driver's core worker reads Ray's
    config; as KubeRay sets it for worker nodes. A value the environment already
    gives stands, with a warning if Ray would end the process first."""
    given = os.environ.get(GCS_RECONNECT_VAR)
    if given is None:
        os.environ[GCS_RECONNECT_VAR] = str(math.ceil(grace + GCS_RECONNECT_MARGIN))
        return
    try:
        shorter = float(given) < grace
    except ValueError:
        shorter = False
    if shorter:
        log.warning("%s=%s: Ray ends this server after %s s without its head, before the %g s of "
                    "cluster.head_down_grace_s", GCS_RECONNECT_VAR, given, given, grace)


JOIN_WAIT = 60.0  # seconds a gateway waits for its machine's Ray node to be known to the head


class RayUnreachable(RuntimeError):
    """The Ray cluster named by ``cluster.ray_address`` does not answer."""


def reachable(address: str, seconds: float) -> None:
    """Wait up to ``seconds`` for the head at ``address`` (``host:port``) to accept a
    connection; RayUnreachable, in one line, if it does not. (Ray itself would wait
    for ever, repeating warnings.) Other forms of address (``auto``, ``ray://``) are
    left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=min(2.0, max(0.1, seconds))).close()
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise RayUnreachable(
                    f"cannot reach the Ray cluster's head at {address} (cluster.ray_address, --ray-address or "
                    f"RAY_ADDRESS) within {seconds:g} s: {exc.strerror or exc}; is it running, and reachable from "
                    "this machine?") from None
            time.sleep(0.5)


def _join(address: str, node_ip_address: str | None) -> None:
    """``ray.init`` onto a running cluster. The node on this machine may not be
    known to the head yet (a pod whose raylet starts beside the gateway, a node
    that just rejoined): Ray then says "No node info found"; wait for it."""
    deadline = time.monotonic() + JOIN_WAIT
    while True:
        try:
            ray.init(address=address, logging_level="WARNING", namespace="shoal", _node_ip_address=node_ip_address)
            return
        except RuntimeError as exc:
            if "No node info found" not in str(exc) or time.monotonic() > deadline:
                raise
            log.warning("this machine's Ray node is not known to the head yet (%s): retrying", _first_line(exc))
            time.sleep(1.0)


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: /proc), to tell it from a later one
    given the same pid; None if there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def _remove_stale_folders() -> None:
    """Remove the folders of embedded instances whose server is gone: one killed
    (SIGKILL, a crash) could not remove its own. A folder is removed only if it
    is this user's and its ``owner`` file names a process that no longer runs."""
    if not os.path.isdir("/proc/self"):
        return  # no way to tell a live owner from a dead one
    for folder in Path(tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            pid, started = (folder / "owner").read_text().split()
        except (OSError, ValueError):
            continue  # not one of ours, or being created
        if process_started(int(pid)) != started:
            shutil.rmtree(folder, ignore_errors=True)


def _private_token() -> None:
    """Token authentication, with a token only this instance knows: Ray's default
    writes one to ``~/.ray/auth_token``, shared with every Ray program of the user,
    and warns about it at every start. Children inherit the environment. A choice
    the user made in the environment stands."""
    if any(var in os.environ for var in AUTH_VARS):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray read its config when it was imported: make this process see token mode too.
    Config.initialize("")


def shutdown(ray_gone: bool = False) -> None:
    """Stop Ray (an embedded instance: its processes, then its folder). With
    ``ray_gone`` (its head processes died or stopped answering) no call is made
    to Ray at all, which would wait for a minute on the dead parts: the
    embedded instance's remaining processes are killed instead."""
    global _embedded
    embedded, _embedded = _embedded, None
    if ray.is_initialized():
        if ray_gone:
            _kill_head(embedded)
        elif not _within(SHUTDOWN_TIMEOUT, ray.shutdown):
            log.warning("Ray did not shut down within %.0f s; its processes are killed", SHUTDOWN_TIMEOUT)
            _kill_head(embedded)
    if embedded is not None:
        shutil.rmtree(embedded.root, ignore_errors=True)


def _within(seconds: float, fn) -> bool:
    """Run ``fn`` in a daemon thread; False if it has not returned in time."""
    thread = threading.Thread(target=fn, name="ray-shutdown", daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _kill_head(embedded: _Embedded | None) -> None:
    """SIGKILL the embedded instance's own processes (children of this process:
    their Popen handles name exactly them); its workers exit with the raylet."""
    if embedded is None:
        return
    processes = [info.process for infos in embedded.node.all_processes.values() for info in infos]
    for process in processes:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 5
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - a process stuck in the kernel is left behind
            pass


# --------------------------------------------------------------------- health


def _ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class ClusterGone(str):
    """A ``ray_problem`` that no waiting cures: the Ray cluster this process
    joined is gone. Its GCS declared this node dead (a dead node never comes
    back), or the head answers as another cluster: it was started again
    without GCS fault tolerance, so it knows nothing of this one (Ray's
    ``WrongClusterID``), and the old cluster's raylets, and the shards with
    them, end at their next liveness check of the GCS."""


async def ray_problem(timeout: float) -> str | None:
    """None while Ray answers; else what is wrong, in a few words (a
    ``ClusterGone`` if it is final). For the embedded instance first its head
    processes (GCS server, raylet: children of this process, so their death is
    seen at once), then, for any instance, a liveness call to the GCS about
    this node, bounded by ``timeout``."""
    if not ray.is_initialized():
        return "Ray is not running"
    if _embedded is not None:
        for kind, label in ((ray_constants.PROCESS_TYPE_GCS_SERVER, "GCS server"),
                            (ray_constants.PROCESS_TYPE_RAYLET, "raylet")):
            for info in _embedded.node.all_processes.get(kind, ()):
                code = info.process.poll()
                if code is not None:
                    return f"Ray's {label} (pid {info.process.pid}) {_ended(code)}"
    gcs = getattr(ray._private.worker.global_worker, "gcs_client", None)
    if gcs is None or _node_id is None:
        return None  # a Ray Client connection: nothing to ask; the shard pings still tell
    try:
        alive = await asyncio.wait_for(gcs.async_check_alive([_node_id], timeout=timeout), timeout + 1)
    except Exception as exc:  # noqa: BLE001 - any failure means the same here
        if "WrongClusterID" in str(exc):
            return ClusterGone(f"Ray's head answers as another cluster ({_first_line(exc)}): it was started again "
                               "without GCS fault tolerance, and the cluster this server joined is gone")
        return f"Ray's GCS did not answer within {timeout:g} s ({_first_line(exc)})"
    if not all(alive):
        return ClusterGone("Ray's GCS reports this node's raylet dead")
    return None


async def ping(actor, timeout: float) -> tuple[str, str, Any]:
    """One health check of a shard actor through Ray's control path (its own
    concurrency group): (ANSWERED, "", its ``Endpoints``), or (SILENT | STARTING |
    DEAD, why, None). The answer is where the actor listens now: after Ray
    restarted it, a new process listens at new addresses. Unanswered, the
    actor's state in the GCS tells a stopped actor (ALIVE but silent) from one
    Ray is restarting (loading its storage) or gave up on."""
    try:
        where = await asyncio.wait_for(actor.endpoints.options(concurrency_group=CONTROL_GROUP).remote(), timeout)
        return ANSWERED, "", where
    except asyncio.TimeoutError:
        failure = None
    except RayActorError as exc:  # ActorUnavailableError, ActorDiedError: perhaps restarting
        failure = exc
    state = await _actor_state(actor, timeout)
    if state in ("RESTARTING", "PENDING_CREATION", "DEPENDENCIES_UNREADY"):
        return STARTING, "Ray is restarting it", None
    if state == "DEAD":
        return DEAD, "its actor died" + (f" ({_first_line(failure)})" if failure is not None else ""), None
    if failure is not None:
        return STARTING, f"its actor was unreachable ({_first_line(failure)})", None
    return SILENT, f"no answer to a health check within {timeout:g} s", None


async def _actor_state(actor, timeout: float) -> str | None:
    """The actor's state as the GCS knows it (ALIVE, RESTARTING, DEAD, ...)."""
    gcs = getattr(ray._private.worker.global_worker, "gcs_client", None)
    if gcs is None:
        return None
    try:
        infos = await asyncio.wait_for(gcs.async_get_all_actor_info(actor_id=actor._actor_id, timeout=timeout),
                                       timeout + 1)
    except Exception:  # noqa: BLE001 - unknown: the caller says "silent"
        return None
    for info in infos.values():
        return gcs_pb2.ActorTableData.ActorState.Name(info.state)
    return None


def restart(actor) -> None:
    """Have Ray kill the actor's process and start it again (it reloads its
    storage: snapshot plus log), as after a crash."""
    ray.kill(actor, no_restart=False)


# --------------------------------------------------------------------- shards


# A Ray custom resource that marks the nodes which host shards (setting
# cluster.shard_node_resource), or None: every alive node with CPUs does. On
# Kubernetes the pods that hold a volume for the replicas advertise it; a
# KubeRay worker group's pods, with no volume of their own, do not.
_shard_resource: str | None = None
# How much of it each shard asks for: enough that Ray places a shard only on a
# node that has the resource, little enough that one node (advertising 1) holds
# ten thousand (Ray counts resources in steps of 0.0001).
SHARD_RESOURCE_SLICE = 0.0001


def place_shards_on(resource: str | None) -> None:
    """Host shards only on the Ray nodes that advertise ``resource`` (None: on
    every alive node with CPUs). Set once at start, before any shard starts."""
    global _shard_resource
    _shard_resource = resource or None


def _hosts_shards(resources: Any) -> bool:
    if _shard_resource is not None:
        return resources.get(_shard_resource, 0) > 0
    return resources.get("CPU", 0) > 0


# A node that advertises the Ray resource ``shoal-node:<name>`` is known to
# placement as ``<name>`` rather than by its Ray node id, which is new at every
# start: a machine (a Kubernetes pod with its own volume) that comes back under
# the same name finds its replicas' files where it left them, and the replicas
# it held are started there again and catch up, instead of being rebuilt from
# the other copies. A node without one is known by its Ray node id.
NODE_NAME_PREFIX = "shoal-node:"
_RAY_NODE_ID = re.compile(r"[0-9a-f]{56}")


def _placement_name(node_id: str, resources: Any) -> str:
    names = sorted(key[len(NODE_NAME_PREFIX):] for key in resources.keys()
                   if key.startswith(NODE_NAME_PREFIX) and len(key) > len(NODE_NAME_PREFIX))
    return names[0] if names else node_id


def shard_nodes() -> list[str]:
    """The Ray nodes that may host shards, by their placement names (see
    NODE_NAME_PREFIX), sorted: alive, and with CPUs, or
    with the resource given to ``place_shards_on``. A node started with
    ``--num-cpus 0`` (a gateway's own, on a machine that only routes) hosts none.

    Asked of the GCS client with a bound (NODES_TIMEOUT), not with ``ray.nodes()``:
    while the head is away that waits for it, and when a head comes back as
    another cluster (no GCS fault tolerance) it aborts the whole process (a
    failed check in Ray's GlobalStateAccessor, Ray 2.60); this raises instead."""
    gcs = getattr(ray._private.worker.global_worker, "gcs_client", None)
    if gcs is None:  # a Ray Client connection
        return sorted(_placement_name(n["NodeID"], n["Resources"]) for n in ray.nodes()
                      if n["Alive"] and _hosts_shards(n["Resources"]))
    infos = gcs.get_all_node_info(timeout=NODES_TIMEOUT, state_filter=gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE)
    return sorted(_placement_name(node.hex(), info.resources_total) for node, info in infos.items()
                  if _hosts_shards(info.resources_total))


def own_node() -> str | None:
    """The id of the Ray node this process runs on (None for a Ray Client)."""
    return _node_id.hex() if _node_id is not None else None


def spawn_shard(name: str, path: str, config: dict[str, Any], options: dict[str, Any], node: str | None = None,
                detached: bool = False):
    """Start (or, after a restart, recover) one shard actor, on ``node`` if given
    (hard affinity: its data is on that node's disk; Ray's soft affinity was seen
    to place actors elsewhere while the node was alive and idle).

    num_cpus=0: a shard is mostly idle memory; reserving a CPU each would cap a
    2-core machine at two shards. max_restarts: a crashed actor comes back and
    recovers from its snapshot and log. ``detached``: the actor outlives the
    gateway that started it (a replica belongs to the cluster, not to one
    gateway), and a gateway that asks for a running one gets it back. With a
    shard resource (``place_shards_on``) the actor asks for a sliver of it, so
    that Ray itself never runs it (nor restarts it) elsewhere, even unpinned; on
    a named node (NODE_NAME_PREFIX), for a sliver of its name.
    """
    resources = {_shard_resource: SHARD_RESOURCE_SLICE} if _shard_resource else {}
    strategy = "DEFAULT"
    if node is not None and _RAY_NODE_ID.fullmatch(node):
        strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    elif node is not None:  # a named node: wherever it runs now (it may be starting again)
        resources[NODE_NAME_PREFIX + node] = SHARD_RESOURCE_SLICE
    return RemoteShardActor.options(
        name=name,
        num_cpus=0,
        resources=resources or None,
        max_concurrency=16,
        max_restarts=3,
        lifetime="detached" if detached else None,
        get_if_exists=detached,
        scheduling_strategy=strategy,
    ).remote(path, config, options)


async def _while_restarting(submit, idempotent: bool):
    """Await ``submit()``; while Ray restarts the actor (ActorUnavailableError),
    retry idempotent calls for up to RESTART_WAIT seconds. A write is never
    retried: it "may or may not have been executed"."""
    deadline = time.monotonic() + RESTART_WAIT
    delay = 0.1
    while True:
        try:
            return await submit()
        except ActorUnavailableError:
            if not idempotent or time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@contextlib.contextmanager
def _shard_errors():
    """A shard's (or a task's) own exception re-raised as itself, an actor that
    died or cannot be reached as ShardUnavailable (Qdrant's 503)."""
    try:
        yield
    except RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except (RayActorError, ActorUnschedulableError) as err:
        raise ShardUnavailable(f"the shard's actor is unavailable: {_first_line(err)}") from None


async def call(actor, method: str, *args: Any, idempotent: bool = True, **kwargs: Any) -> Any:
    """Await one ShardActor.call (errors as ``_shard_errors`` says)."""
    with _shard_errors():
        return await _while_restarting(lambda: actor.call.remote(method, *args, **kwargs), idempotent)


async def ready(actor) -> None:
    await _while_restarting(lambda: actor.ready.options(concurrency_group=CONTROL_GROUP).remote(), True)


async def endpoint(actor) -> tuple[str, str]:
    return await _while_restarting(lambda: actor.endpoint.options(concurrency_group=CONTROL_GROUP).remote(), True)


async def endpoints(actor):
    """The shard's ``cluster.transport.Endpoints``: its Unix socket and its TCP listener."""
    try:
        return await _while_restarting(lambda: actor.endpoints.options(concurrency_group=CONTROL_GROUP).remote(),
                                       True)
    except (RayActorError, ActorUnschedulableError) as err:
        raise ShardUnavailable(f"the shard's actor is unavailable: {_first_line(err)}") from None


async def destroy(actor) -> None:
    """End the actor and have it delete its storage first (on its own node). A
    failure there is logged: the actor ends all the same, and what it left is removed
    with its collection's folder."""
    try:
        await asyncio.wait_for(actor.destroy.remote(), CLOSE_TIMEOUT)
    except (RayActorError, ActorUnschedulableError, RayTaskError, asyncio.TimeoutError) as exc:
        log.warning("shard actor could not delete its storage (%s): it is removed with its collection",
                    _first_line(exc) or type(exc).__name__)
    ray.kill(actor, no_restart=True)


def find_shard(name: str):
    """The running shard actor called ``name`` in Shoal's namespace, or None: how a
    gateway reaches replicas another gateway or the controller started, without
    ever starting one itself (blocking: a GCS lookup)."""
    try:
        return ray.get_actor(name)
    except ValueError:
        return None


async def locate_shard(name: str, timeout: float):
    """Where the shard actor called ``name`` is: ``(actor, Endpoints)`` once it
    runs; NOT_STARTED while Ray has not started it (no actor of that name yet, or
    one still being created for the first time); None when that cannot be told
    within ``timeout`` (restarting, silent, gone)."""
    actor = await asyncio.to_thread(find_shard, name)
    if actor is None:
        return NOT_STARTED
    state = await _actor_state(actor, timeout)
    if state in ("PENDING_CREATION", "DEPENDENCIES_UNREADY"):
        return NOT_STARTED
    if state != "ALIVE":
        return None
    try:
        where = await asyncio.wait_for(actor.endpoints.options(concurrency_group=CONTROL_GROUP).remote(), timeout)
    except (asyncio.TimeoutError, RayActorError):
        return None
    return actor, where


async def destroy_named(name: str) -> None:
    """``destroy`` the actor called ``name`` in Shoal's namespace, if there is one."""
    actor = await asyncio.to_thread(find_shard, name)
    if actor is not None:
        await destroy(actor)


async def stop(actor, take_snapshot: bool = True) -> None:
    """Close the shard cleanly (snapshot, log closed), then end the actor. A shard
    that does not close within CLOSE_TIMEOUT is ended anyway: it recovers from
    its log at the next start."""
    try:
        await asyncio.wait_for(actor.close.remote(take_snapshot), CLOSE_TIMEOUT)
    except RayActorError:
        log.warning("shard actor died before it could close")
    except asyncio.TimeoutError:
        log.warning("shard actor did not close within %.0f s; ended (it recovers from its log)", CLOSE_TIMEOUT)
    ray.kill(actor, no_restart=True)


# ------------------------------------------------ bulk loads (cluster.ingest)


def private_access() -> tuple[str, str] | None:
    """(GCS address, token) of the embedded instance, None on a joined cluster: what
    a Ray program on this machine needs to join it (``shoal ingest``). The server
    writes them to a file only its user can read (``cluster.ingest.access``)."""
    if _embedded is None:
        return None
    return _embedded.node.gcs_address, os.environ.get("RAY_AUTH_TOKEN", "")


def join_private(address: str, token: str) -> None:
    """Join a ``shoal serve``'s embedded instance (on 127.0.0.1, with its token)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if token:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = token
        Config.initialize("")
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    reachable(address, 10.0)
    ray.init(address=address, logging_level="WARNING", namespace="shoal", _node_ip_address="127.0.0.1",
             log_to_driver=False)


def quiet_ray_data() -> None:
    """Ray Data without its progress bars and plan logs: the load prints its own
    progress line (``cluster.ingest.job``), which they would garble."""
    import ray.data

    context = ray.data.DataContext.get_current()
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True  # row numbers are counted in file order
    context.execution_options.verbose_progress = False


def read_batches(kind: str, path: str, batch_rows: int):
    """The rows of one file, in file order, in batches of ``batch_rows`` (the last
    may be shorter), read with Ray Data: ``parquet`` (pyarrow tables), ``text``
    (one row per line, empty lines kept: {"text": array of str}), ``numpy``
    ({"data": (n, dim) array})."""
    import ray.data

    if kind == "parquet":
        dataset, batch_format = ray.data.read_parquet(path), "pyarrow"
    elif kind == "text":
        dataset, batch_format = ray.data.read_text(path, drop_empty_lines=False), "numpy"
    elif kind == "numpy":
        dataset, batch_format = ray.data.read_numpy(path), "numpy"
    else:
        raise ValueError(f"unknown source kind {kind!r}")
    return dataset.iter_batches(batch_size=batch_rows, batch_format=batch_format, prefetch_batches=2)


def task(fn, num_cpus: float = 0):
    """``fn`` as a Ray task (``submit`` runs it)."""
    return ray.remote(num_cpus=num_cpus, max_retries=0)(fn)


def submit(remote_fn, *args: Any):
    return remote_fn.remote(*args)


def put(value: Any):
    return ray.put(value)


def finished(refs: list, timeout: float) -> tuple[list, list]:
    """(done, pending) of ``refs`` after at most ``timeout`` seconds."""
    return ray.wait(refs, num_returns=1, timeout=timeout)


def result(ref) -> Any:
    """A finished task's value; its own exception re-raised as itself."""
    with _shard_errors():
        return ray.get(ref)


def call_blocking(actor, method: str, *args: Any, timeout: float = 600.0) -> Any:
    """One ``ShardActor.call`` from a Ray task, waited for (errors as ``call``'s)."""
    with _shard_errors():
        return ray.get(actor.call.remote(method, *args), timeout=timeout)


def endpoints_blocking(actor):
    """``endpoints`` from a Ray task."""
    return ray.get(actor.endpoints.options(concurrency_group=CONTROL_GROUP).remote(), timeout=60)


KV_NAMESPACE = "shoal"


def kv_claim(key: str, value: bytes) -> bytes:
    """Store ``value`` under ``key`` in Ray's key-value store (the GCS) unless a
    value is there already; answer the stored value (the first writer's)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(key, value, overwrite=False, namespace=KV_NAMESPACE)
    stored = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    return value if stored is None else stored
