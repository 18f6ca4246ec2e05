"""The Ray head killed under writes and searches, with and without GCS fault tolerance.

With GCS fault tolerance (an external Redis, as KubeRay deploys it) the GCS keeps
its tables in Redis, and a head started again at the same address, with the same
Redis and namespace, takes the cluster back, actors included. Meanwhile the
shards, on other machines, answer the gateway over their authenticated TCP
listeners: no write is lost, no search fails, no shard is restarted; only what
needs Ray itself (creating a collection) answers 503 until the head is back.

Without it the head's loss is the cluster's: a head started again is a new,
empty cluster, which the other nodes' raylets learn at their next liveness check
of the GCS, and they end, the shard actors with them (a head not started again:
they end once ``RAY_gcs_rpc_server_reconnect_timeout_s``, 60 s by default, has
passed). The gateway serves from the shards until then, and exits (non-zero,
one ERROR line) as soon as it sees the head answer as another cluster.

Machines: n1 the Ray head (no CPU: it hosts no shard), n2 and n3 Ray workers
holding the shards, n4 the gateway's (a node with no CPU, and a cluster secret,
so the data path is TCP), n5 Redis: a machine of its own, as KubeRay's Redis pod.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.api.rawhttp import call, error_text
from tests.cluster.conftest import need
from tests.cluster.connections import escapes
from tests.cluster.netns import Host, Network
from tests.cluster.raynodes import RayCluster, end, until
from tests.conftest import cmdline as _cmdline

pytestmark = pytest.mark.slow

SECRET = "a test secret, long enough to count"
PORT = 6333
REDIS_PORT = 6379
DIM, SHARDS, BATCH = 8, 2, 10
DOWN_FOR = 5.0  # seconds of load while the head is dead, before it is started again
MAX_ROUNDS = 2000  # write + search rounds of one load, at most
MAX_LOAD_S = 240.0  # seconds one load runs, at most
# Without GCS fault tolerance: how often the raylets check that the GCS still
# knows their cluster (Ray's default is longer; shorter keeps the test short).
LIVENESS_CHECK_MS = 2000


# ----------------------------------------------------------------- machines


@dataclass
class Redis:
    """A Redis of the test's own on ``host`` (its port, its folder, nothing saved
    to disk): never the machine's service, should the package have started one."""

    network: Network
    host: Host
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host.address}:{REDIS_PORT}"

    def start(self) -> None:
        folder = self.network.scratch / "redis"
        folder.mkdir()
        log = self.network.scratch / "redis.log"
        self.proc = self.network.popen(self.host, [
            "redis-server", "--bind", self.host.address, "--port", str(REDIS_PORT), "--requirepass", self.password,
            "--save", "", "--appendonly", "no", "--dir", str(folder), "--daemonize", "no",
        ], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, log=log)

        def answers() -> bool:
            assert self.proc.poll() is None, log.read_text(errors="replace")[-2000:]
            with contextlib.suppress(RuntimeError):
                return self.cli("ping").strip() == "PONG"
            return False

        until(answers, 30, "Redis to answer")

    def cli(self, *args: str) -> str:
        return self.network.run(self.host, "redis-cli", "-h", self.host.address, "-p", str(REDIS_PORT),
                                "--no-auth-warning", "-a", self.password, *args)

    def stop(self) -> None:
        if self.proc is not None:
            end(self.proc)


def _need_redis() -> None:
    """As ``conftest.need``: skip where Redis is missing, fail in CI (scripts/test installs it)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        why = "redis-server is not installed (scripts/test installs it)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)


@contextlib.contextmanager
def _cluster(size: int, **kw):
    """A network of ``size`` hosts and a Ray cluster on its first four: the head
    n1 and the gateway's n4 with no CPU, n2 and n3 with one each."""
    network = Network(size)
    cluster = None
    try:
        cluster = RayCluster(network, [0, 1, 1, 0], **kw)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        network.close()


def _gateway(cluster: RayCluster, **env: str) -> tuple[subprocess.Popen, str, Path]:
    """``shoal serve`` joined to ``cluster`` on n4, with a cluster secret; ready."""
    host = cluster.nodes[3].host
    env = {"SHOAL__CLUSTER__NODE_IP_ADDRESS": host.address, "SHOAL__CLUSTER__SECRET": SECRET, **env}
    name = f"gateway-{len(cluster.drivers) + 1}"
    proc = cluster.popen(host, [sys.executable, "-m", "gateway", "serve", "--host", host.address, "--port", str(PORT),
                                "--storage", str(cluster.network.scratch / name)], name, env=env)
    url = f"http://{host.address}:{PORT}"

    def ready():
        assert proc.poll() is None, "the gateway exited"
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    until(ready, 120, "the gateway to answer /readyz")
    return proc, url, cluster.network.scratch / f"{name}.log"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            end(proc)


def _processes(cluster: RayCluster, name: bytes) -> dict[int, str]:
    """The live processes whose name starts with ``name`` (``raylet``; ``ray::ShardActor``,
    which reads ``ray::ShardActor.call`` while busy): pid -> node."""
    return {pid: node.name for node in cluster.nodes for pid in node.pids()
            if os.path.basename(_cmdline(pid).split(b"\0")[0]).startswith(name)}


SHARD_ACTOR = b"ray::ShardActor"


# --------------------------------------------------------------------- load


def _vector(i: int) -> list[float]:
    rng = random.Random(i)  # the same vector for an id wherever it is made, and no two alike
    return [rng.gauss(0.0, 1.0) for _ in range(DIM)]


def _create(url: str, name: str, timeout: float = 120) -> tuple[int, object, float]:
    started = time.monotonic()
    status, body = call("PUT", f"{url}/collections/{name}",
                        {"vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": SHARDS}, timeout=timeout)
    return status, body, time.monotonic() - started


def _fill(url: str, name: str, count: int) -> None:
    assert _create(url, name)[0] == 200
    points = [{"id": i, "vector": _vector(i), "payload": {"i": i}} for i in range(count)]
    assert call("PUT", f"{url}/collections/{name}/points?wait=true", {"points": points})[0] == 200


@dataclass
class Load:
    """Writes (``wait=true``, BATCH new points each) and exact searches for the
    point just written, through the gateway, in a thread, until stopped (or
    MAX_ROUNDS, or MAX_LOAD_S). Every request is kept: (when it started, what,
    status, seconds taken); every failure in ``problems``."""

    url: str
    collection: str
    next_id: int
    acked: list[int] = field(default_factory=list)
    requests: list[tuple[float, str, int, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the load did not stop"

    def _request(self, what: str, method: str, path: str, body: dict) -> tuple[int, object]:
        started = time.monotonic()
        try:
            status, answer = call(method, self.url + path, body, timeout=30)
        except OSError as exc:  # no answer at all
            status, answer = 0, repr(exc)
        self.requests.append((started, what, status, time.monotonic() - started))
        if status != 200:
            self.problems.append(f"{what} at {started:.1f}: {status} {error_text(answer) or answer}")
        return status, answer

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_LOAD_S
        for _ in range(MAX_ROUNDS):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            ids = list(range(self.next_id, self.next_id + BATCH))
            self.next_id += BATCH
            points = [{"id": i, "vector": _vector(i), "payload": {"i": i}} for i in ids]
            status, _ = self._request("write", "PUT", f"/collections/{self.collection}/points?wait=true",
                                      {"points": points})
            written = status == 200
            if written:
                self.acked += ids
            status, answer = self._request("search", "POST", f"/collections/{self.collection}/points/search",
                                           {"vector": _vector(ids[0]), "limit": 5, "params": {"exact": True}})
            if written and status == 200 and answer["result"][0]["id"] != ids[0]:
                self.problems.append(f"search for point {ids[0]} found {answer['result'][:1]}")
            time.sleep(0.02)

    def between(self, start: float, stop: float) -> list[tuple[float, str, int, float]]:
        return [r for r in self.requests if start <= r[0] <= stop]


def _readyz(url: str) -> tuple[int, str]:
    try:
        return call("GET", f"{url}/readyz", timeout=5)
    except OSError as exc:
        return 0, repr(exc)


# -------------------------------------------------------------------- tests


def test_the_head_killed_and_restarted_with_gcs_fault_tolerance_loses_nothing():
    need()
    _need_redis()
    with _cluster(5, env={"RAY_health_check_period_ms": "1000"}) as cluster:
        redis = Redis(cluster.network, cluster.network.hosts[4])
        # The head alone is told of Redis (as KubeRay's gcsFaultToleranceOptions does):
        # RAY_REDIS_ADDRESS, the password, and a namespace of its own in Redis.
        namespace = f"shoal-test-{cluster.network.token}"
        cluster.head_env.update(RAY_REDIS_ADDRESS=redis.address, RAY_external_storage_namespace=namespace)
        cluster.head_args += ["--redis-password", redis.password]
        load = None
        try:
            redis.start()
            cluster.start()
            gateway, url, gateway_log = _gateway(cluster)
            _fill(url, "ft", 200)
            shards = _processes(cluster, SHARD_ACTOR)
            assert len(shards) == SHARDS and set(shards.values()) == {"n2", "n3"}, shards
            # Ray's GCS keeps its tables in Redis, under this cluster's namespace.
            assert namespace in redis.cli("--scan"), redis.cli("--scan")[:500]

            load = Load(url, "ft", next_id=1000).start()
            until(lambda: len(load.acked) >= 3 * BATCH, 30, "writes before the head is killed")

            killed_at = time.monotonic()
            assert cluster.kill(cluster.head), "no process of the head was killed"
            # The gateway sees it, stays ready and says what does not work.
            status, text = until(lambda: (r := _readyz(url))[0] == 200 and "degraded" in r[1] and r,
                                 15, "/readyz to report the head's loss")
            assert "Ray is unavailable" in text and "cannot be created" in text, text
            assert call("GET", f"{url}/livez", timeout=5)[0] == 200
            # What needs Ray's head answers 503 at once; what the shards answer goes on.
            status, body, took = _create(url, "during", timeout=30)
            assert status == 503 and took < 2.0, (status, body, took)
            assert error_text(body).startswith("Shard temporarily unavailable: Ray is unavailable"), body
            acked_at_loss = len(load.acked)
            time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - killed_at)))
            assert len(load.acked) >= acked_at_loss + 3 * BATCH, "too few writes while the head was down"

            restart_at = time.monotonic()
            cluster.restart(cluster.head)  # same address, same Redis, same namespace
            restarted_at = time.monotonic()
            until(lambda: (r := _readyz(url))[0] == 200 and "degraded" not in r[1], 60,
                  "the gateway to see the head back")
            back_at = time.monotonic()
            time.sleep(2)  # some load after the return too
            load.stop()

            during = load.between(killed_at, back_at)
            writes_during = [r for r in during if r[1] == "write"]
            print(f"\nhead down {back_at - killed_at:.1f} s (its restart took {restarted_at - restart_at:.1f} s); "
                  f"{len(load.requests)} requests, {len(during)} while it was down ({len(writes_during)} writes); "
                  f"slowest {max(r[3] for r in load.requests):.2f} s")
            assert load.problems == []
            assert len(writes_during) >= 10

            # Every acknowledged write is there, served by the same shard processes.
            expected = 200 + len(load.acked)
            status, body = call("POST", f"{url}/collections/ft/points/count", {"exact": True})
            assert status == 200 and body["result"]["count"] == expected, (body, expected)
            for chunk in range(0, len(load.acked), 500):
                ids = load.acked[chunk:chunk + 500]
                status, body = call("POST", f"{url}/collections/ft/points", {"ids": ids, "with_payload": True})
                assert status == 200 and sorted(p["id"] for p in body["result"]) == sorted(ids)
            assert _processes(cluster, SHARD_ACTOR) == shards

            # A change that needs both the metadata and Ray works again.
            status, body, _ = _create(url, "after")
            assert status == 200, (status, body)
            assert call("PUT", f"{url}/collections/after/points?wait=true",
                        {"points": [{"id": 1, "vector": _vector(1)}]})[0] == 200
            assert call("POST", f"{url}/collections/after/points/count", {"exact": True})[1]["result"]["count"] == 1

            log = gateway_log.read_text(errors="replace")
            assert "requests the shards can answer are served" in log and "Ray answers again" in log
            assert " ERROR " not in log
            assert [str(c) for c in escapes(cluster.network, cluster.pids() | {redis.proc.pid})] == []
            _stop(gateway)
        finally:
            if load is not None:
                load.stop()
            redis.stop()


def test_without_gcs_fault_tolerance_the_cluster_stops_and_the_gateway_exits():
    need()
    with _cluster(4, env={"RAY_health_check_period_ms": "1000",
                          "RAY_raylet_liveness_self_check_interval_ms": str(LIVENESS_CHECK_MS)}) as cluster:
        load = None
        try:
            cluster.start()
            gateway, url, gateway_log = _gateway(cluster)
            _fill(url, "c", 100)
            shards = _processes(cluster, SHARD_ACTOR)
            raylets = {pid for pid, node in _processes(cluster, b"raylet").items() if node != "n1"}
            assert len(shards) == SHARDS and len(raylets) == 3

            load = Load(url, "c", next_id=1000).start()
            until(lambda: len(load.acked) >= 3 * BATCH, 30, "writes before the head is killed")
            killed_at = time.monotonic()
            assert cluster.kill(cluster.head)
            # The shards still answer: the gateway serves from them, as with fault tolerance.
            until(lambda: "degraded" in _readyz(url)[1], 15, "/readyz to report the head's loss")
            acked_at_loss = len(load.acked)
            until(lambda: len(load.acked) >= acked_at_loss + 3 * BATCH, 15, "writes while the head is down")
            load.stop()
            assert load.problems == []

            # Started again without Redis, the head is a new cluster: the gateway's
            # driver belongs to one that is gone, and it exits at once, saying so.
            cluster.restart(cluster.head)
            restarted_at = time.monotonic()
            code = gateway.wait(timeout=30)
            exited_after = time.monotonic() - restarted_at
            log = gateway_log.read_text(errors="replace")
            said = [line for line in log.splitlines() if " ERROR cluster.health: " in line]
            assert code != 0 and len(said) == 1, (code, log[-3000:])
            assert "answers as another cluster" in said[0] and "without GCS fault tolerance" in said[0], said
            assert "Check failed" not in log  # ended by the gateway, not by an abort inside Ray

            # And the old cluster stops: the other nodes' raylets learn that the GCS
            # no longer knows their cluster, and end, the shard actors with them.
            until(lambda: not (set(_processes(cluster, b"raylet")) | set(_processes(cluster, SHARD_ACTOR)))
                  & (raylets | set(shards)), 30, "the old cluster's raylets and shards to end")
            print(f"\nwithout GCS FT: the gateway exited {exited_after:.1f} s after the head's restart; "
                  f"the old raylets and shards ended {time.monotonic() - killed_at:.1f} s after the head's loss")
            assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []
        finally:
            if load is not None:
                load.stop()
