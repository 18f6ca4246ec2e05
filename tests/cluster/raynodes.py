"""A Ray cluster whose nodes are separate "machines": one ``ray start`` per host of
a ``netns.Network``, the head on the first.

Each node is ``ray start --block`` in a session of its own: its Ray processes
stay in that session (workers make process groups of their own, but not
sessions), so a node is stopped or crashed by signalling exactly its session,
as ``tests/conftest.py``'s ShoalServer does. ``ray stop`` is never used: it
stops every Ray on the machine, other engineers' included.

Every node and driver gets the same random token (``RAY_AUTH_MODE=token``), so
no other Ray program on the machine can join, and a ``TMPDIR`` inside the
network's scratch folder, so nothing of this cluster lands in ``/tmp/ray``
(where ``ray.init()`` elsewhere would find it and attach to it).

A Ray driver must run on a host that has a node: it reaches its node's raylet
through a Unix socket, and tells the other nodes to call it back at that node's
address. Run from a namespace without a node (or from the root namespace) it
still connects, and small tasks work, but every call back to it (objects it
owns, large arguments and results) goes to the wrong namespace and hangs. A
node with ``num_cpus=0`` makes a host a client machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.netns import Host, Network
from tests.conftest import REPO_ROOT, _proc_table

HEAD_PORT = 6379  # each host has ports of its own: no free-port search needed
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # small stores: five nodes share one machine's /dev/shm
STARTED = "Ray runtime started"  # what `ray start` prints once its node has joined
STOP_GRACE = 2.0  # s between SIGTERM and SIGKILL when a test's cluster is torn down (``stop``)


def session_pids(leader: int) -> set[int]:
    """Every live process of ``leader``'s session, and all their descendants."""
    table = _proc_table()
    found = {pid for pid, (_, _, sid) in table.items() if sid == leader} | ({leader} & set(table))
    while children := {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found:
        found |= children
    return found


def kill_session(leader: int, sig: int = signal.SIGKILL, wait: float = 15.0) -> set[int]:
    """Send ``sig`` to every process of ``leader``'s session; with SIGKILL wait
    until they are gone. The pids signalled."""
    victims = session_pids(leader)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while sig == signal.SIGKILL and victims & set(_proc_table()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return victims


def end(*procs: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM each ``proc``, then SIGKILL what is left of its session after
    ``grace`` s, all together. SIGTERM goes to the leader alone, for ``ray start
    --block`` to stop its node's processes in order (a SIGTERM to all of them at
    once leaves the head waiting for the whole grace). Measured with Ray 2.60 at a
    module's teardown, that orderly stop outlasted 10 s and was killed: see ``stop``."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + grace
    for proc in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        kill_session(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def until(predicate, seconds: float, what: str, step: float = 0.25):
    """``predicate()``'s first true value, tried at most every ``step`` s for
    ``seconds``; fails saying ``what`` did not happen."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / step) + 1):
        value = predicate()
        if value or time.monotonic() > deadline:
            break
        time.sleep(step)
    assert value, f"not within {seconds:.0f} s: {what}"
    return value


@dataclass
class RayNode:
    host: Host
    num_cpus: int
    head: bool
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def name(self) -> str:
        return self.host.name.rsplit("-", 1)[1]  # n1, n2, ...

    def pids(self) -> set[int]:
        return session_pids(self.proc.pid) if self.proc else set()


@dataclass
class RayCluster:
    """One node per entry of ``cpus`` (its ``--num-cpus``), on ``network.hosts`` in
    order; the first is the head. ``env`` adds variables to every node and driver
    (e.g. ``RAY_health_check_period_ms``); ``head_env`` and ``head_args`` to the
    head's ``ray start`` alone (e.g. ``RAY_REDIS_ADDRESS`` and ``--redis-password``
    for GCS fault tolerance)."""

    network: Network
    cpus: list[int]
    env: dict[str, str] = field(default_factory=dict)
    head_env: dict[str, str] = field(default_factory=dict)
    head_args: list[str] = field(default_factory=list)
    named: bool = False  # each node with CPUs advertises ``shoal-node:<its name>`` (cluster.runtime)
    nodes: list[RayNode] = field(init=False)
    drivers: list[subprocess.Popen] = field(init=False, default_factory=list)

    def __post_init__(self):
        if len(self.cpus) > len(self.network.hosts):
            raise ValueError(f"{len(self.cpus)} nodes on {len(self.network.hosts)} hosts")
        self.nodes = [RayNode(h, n, i == 0) for i, (h, n) in enumerate(zip(self.network.hosts, self.cpus))]
        self.token = secrets.token_hex(32)
        (self.network.scratch / "tmp").mkdir(exist_ok=True)

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def address(self) -> str:
        return f"{self.head.host.address}:{HEAD_PORT}"

    def environ(self) -> dict[str, str]:
        """The environment of every process of this cluster (``RAY_ADDRESS`` is
        added for drivers). Nothing Ray-related is inherited from the test's own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
                   TMPDIR=str(self.network.scratch / "tmp"), **self.env)
        return env

    def start(self, timeout: float = 90.0) -> None:
        """Start the head, then every other node at once; return when all joined."""
        self._launch(self.head)
        self._wait_started([self.head], timeout)
        for node in self.nodes[1:]:
            self._launch(node)
        self._wait_started(self.nodes[1:], timeout)

    def restart(self, node: RayNode, timeout: float = 90.0) -> None:
        """Start ``node`` again (after ``kill`` or ``stop_node``); Ray gives it a new node id."""
        end(node.proc)
        if node.head:
            # `ray start --head` refuses to start where its folder names a cluster at its
            # own address that `ps` shows processes of; here `ps` sees the other hosts'
            # raylets, which name that address. A head machine started anew (a new
            # KubeRay head pod) has no such file.
            (self.network.scratch / node.name / "ray_current_cluster").unlink(missing_ok=True)
        self._launch(node)
        try:
            self._wait_started([node], timeout)
        except RuntimeError:
            if not node.head or node.proc.poll() is None:
                raise
            # Seen once in CI (in 1 of 4 runs of test_gcs_ft): a head started anew, without
            # GCS fault tolerance, while the old cluster's raylets still called its address,
            # waited 30 s for its own GCS and exited. KubeRay starts a head pod that exits
            # again; so does this, once, after saying what the GCS logged.
            kill_session(node.proc.pid)
            print(f"\nhead restart {node.starts} exited; the GCS logged:\n{self._gcs_log_tail(node)}", flush=True)
            (self.network.scratch / node.name / "ray_current_cluster").unlink(missing_ok=True)
            self._launch(node)
            self._wait_started([node], timeout)

    def _gcs_log_tail(self, node: RayNode, chars: int = 2000) -> str:
        logs = sorted((self.network.scratch / node.name).glob("session_*/logs/gcs_server.*"),
                      key=lambda path: path.stat().st_mtime)
        return "".join(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}" for path in logs[-2:]) or "(no log)"

    def kill(self, node: RayNode) -> set[int]:
        """kill -9 every process of ``node`` at once, as a power cut would."""
        victims = kill_session(node.proc.pid)
        node.proc.wait(timeout=5)
        return victims

    def stop_node(self, node: RayNode) -> None:
        end(node.proc)

    def popen(self, host: Host | None, argv: list[str], name: str, pipes: bool = False,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Run ``argv`` on ``host`` (None: the root namespace) with the cluster's
        environment and ``RAY_ADDRESS``; kept, and ended by ``stop``. Its output goes
        to ``<scratch>/<name>.log``. A Ray driver needs a host with a node (see above)
        and must pass ``_node_ip_address`` (``SHOAL_TEST_NODE_IP``) to ``ray.init``:
        Ray finds local raylets with ``ps``, which here sees every host's, and
        would otherwise attach to the head's. ``env`` adds variables."""
        env = dict(self.environ(), RAY_ADDRESS=self.address, SHOAL_TEST_NODE_IP=host.address if host else "",
                   **(env or {}))
        proc = self.network.popen(host, argv, env, log=self.network.scratch / f"{name}.log", cwd=REPO_ROOT, pipes=pipes)
        self.drivers.append(proc)
        return proc

    def driver(self, host: Host, timeout: float = 60.0) -> Driver:
        """A ``raydriver`` on ``host``, joined to the cluster."""
        name = f"driver-{len(self.drivers) + 1}"
        proc = self.popen(host, [sys.executable, "-m", "tests.cluster.raydriver"], name, pipes=True)
        driver = Driver(proc, self.network.scratch / f"{name}.log")
        driver.node_id = driver.read(timeout)
        return driver

    def pids(self) -> set[int]:
        """Every live process this cluster started: nodes, their workers, drivers."""
        return set().union(*(n.pids() for n in self.nodes), *(session_pids(p.pid) for p in self.drivers))

    def stop(self) -> None:
        """End the drivers, the other nodes, then the head (SIGTERM, then SIGKILL):
        a node whose head is gone first waits for it until killed. The cluster is
        done with, so a node's graceful stop is not waited out: measured, the
        nodes and then the head each outlasted a 10 s grace (20 s of every
        module's teardown), and SIGKILL followed all the same."""
        end(*self.drivers, grace=STOP_GRACE)
        end(*(n.proc for n in self.nodes[1:] if n.proc is not None), grace=STOP_GRACE)
        if self.head.proc is not None:
            end(self.head.proc, grace=STOP_GRACE)

    def log(self, node: RayNode) -> Path:
        return self.network.scratch / f"{node.name}.log"

    def _launch(self, node: RayNode) -> None:
        node.starts += 1
        # No log monitor: one process less per node (logs stay in the node's folder).
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                "--include-log-monitor", "false",
                "--node-ip-address", node.host.address, "--num-cpus", str(node.num_cpus),
                "--object-store-memory", str(OBJECT_STORE_BYTES),
                "--temp-dir", str(self.network.scratch / node.name)]
        if self.named and node.num_cpus:
            argv += ["--resources", json.dumps({f"shoal-node:{node.name}": 1})]
        env = self.environ()
        if node.head:
            argv += ["--head", "--port", str(HEAD_PORT), "--include-dashboard", "false", *self.head_args]
            env.update(self.head_env)
        else:
            argv += ["--address", self.address]
        with open(self.log(node), "a") as f:
            f.write(f"\n=== start {node.starts}: {' '.join(argv)}\n")
        node.proc = self.network.popen(node.host, argv, env, log=self.log(node), cwd=REPO_ROOT)

    def _wait_started(self, nodes: list[RayNode], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(nodes)
        while waiting:
            for node in list(waiting):
                text = self.log(node).read_text(errors="replace")
                last = text.rsplit("=== start ", 1)[-1]
                if STARTED in last:
                    waiting.remove(node)
                elif node.proc.poll() is not None or time.monotonic() > deadline:
                    why = "exited" if node.proc.poll() is not None else f"did not start within {timeout:.0f} s"
                    raise RuntimeError(f"Ray node {node.name} ({node.host.address}) {why}:\n{last[-3000:]}")
            time.sleep(0.2)


class Driver:
    """The test's end of a ``raydriver``: ``ask("nodes")``, ``ask("submit", node=…)``."""

    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log
        self.node_id = ""
        self._buffer = b""

    def ask(self, op: str, timeout: float = 60.0, **args):
        """Call ``Session.<op>(**args)`` in the driver; ``timeout`` s on top of its own ``seconds``."""
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        return self.read(timeout + args.get("seconds", 0))

    def read(self, timeout: float):
        """The next answer, within ``timeout`` s, or an error with the driver's log."""
        deadline = time.monotonic() + timeout
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                answer = json.loads(line)
                if "error" in answer:
                    raise RuntimeError(f"Ray driver: {answer['error']}")
                return answer["ok"]
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                why = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "no answer"
                tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                raise RuntimeError(f"Ray driver: {why} within {timeout:.0f} s\n{tail}")
            if select.select([self.proc.stdout], [], [], min(left, 0.5))[0]:
                self._buffer += os.read(self.proc.stdout.fileno(), 65536)


FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000"}


@contextlib.contextmanager
def running(cpus: list[int], env: dict[str, str] | None = None, named: bool = False):
    """A network of ``len(cpus)`` hosts and a RayCluster on it (``cpus``: each
    node's ``--num-cpus``, the head first), started; stopped and removed at the end.
    By default the GCS checks every node each second (see ``conftest.ray_cluster``).
    ``named``: the nodes with CPUs carry placement names (``RayCluster.named``)."""
    network = Network(len(cpus))
    cluster = RayCluster(network, cpus, env=FAST_HEALTH_CHECKS if env is None else env, named=named)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        network.close()
