"""Shared fixtures: one real Shoal server per test session, and clients pointed at it.

The API suites (tests/api, tests/latest) drive a real server through the official
qdrant-client and compare every answer with ``QdrantClient(":memory:")``, Qdrant's own
pure-Python implementation (qdrant-client's congruence tests do the same).

This file is imported under two environments: the project's (qdrant-client 1.15.1) and
one where the newest qdrant-client is first on ``sys.path`` (tests/latest). So it only
imports the standard library and pytest at module level; qdrant_client is imported
inside the fixtures, and nothing here depends on the client's version-specific models.

Environment switches (read here, at the test entry point, never by Shoal's modules):
- ``SHOAL_TEST_AGAINST_MEMORY=1``: the "Shoal" side is a second ``:memory:`` client and
  no server is started. Checks the test code itself; raw-HTTP and restart tests skip.
- ``SHOAL_TEST_SERVER_PYTHON``: interpreter that runs the server (default: this one).
- ``SHOAL_TEST_STARTUP_TIMEOUT``: seconds to wait for ``/readyz`` (default 120).
- ``SHOAL_TEST_START_ATTEMPTS``: tries per server start (default 2).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
AGAINST_MEMORY = os.environ.get("SHOAL_TEST_AGAINST_MEMORY", "") == "1"
STARTUP_TIMEOUT = float(os.environ.get("SHOAL_TEST_STARTUP_TIMEOUT", "120"))
START_ATTEMPTS = int(os.environ.get("SHOAL_TEST_START_ATTEMPTS", "2"))
CLIENT_TIMEOUT = 60
SHARD_COUNTS = (1, 3)
# Loopback traffic must never go through a proxy named in the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1,localhost"]))


def _ephemeral_ports() -> range:
    try:
        low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(attempts: int = 200, low: int = 10_000) -> int:
    """A loopback TCP port nobody listens on right now (nor on its + 2, where a
    server puts its Raft port), below the kernel's ephemeral
    range: a server binds its ports after Ray has opened many connections, and any
    of those may have been given an ephemeral port as its own (seen: the Raft port,
    HTTP port + 2, taken at a restart). `low` raises the floor, e.g. above
    the 10002-19999 that `ray start` keeps for its workers by default."""
    ephemeral = _ephemeral_ports()
    rng = random.Random()
    for _ in range(attempts):
        port = rng.randrange(low, ephemeral.start)
        if port + 2 in ephemeral:  # the server's Raft port is its HTTP port + 2
            continue
        if all(_bindable(p) for p in (port, port + 2)):
            return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def cmdline(pid: int) -> bytes:
    """Process ``pid``'s command line (NUL-separated), b"" if there is no such process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def ended(pid: int) -> bool:
    """Whether process ``pid`` is gone and has let go of its files and sockets.

    A zombie is not enough: the thread-group leader turns "Z" as soon as it
    exits, while its other threads may still be exiting, holding the shared file
    table, so a listening socket can stay open (and take, then reset, new
    connections) for a moment after the leader is a zombie. Only once no other
    thread is left is every file closed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        state = stat[stat.rfind(")") + 2 :].split()[0]
        return state in ("Z", "X") and os.listdir(f"/proc/{pid}/task") in ([], [str(pid)])
    except (OSError, IndexError):
        return True


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, pgid, sid) for every process, read from /proc (Linux)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 4 or (fields[0] == "Z" and ended(int(entry))):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


class ShoalServer:
    """One ``python -m gateway serve`` subprocess in its own session and process group.

    Ray's head processes stay in the server's process group (Ray's reaper calls
    ``setpgrp``, a no-op for a session leader); Ray workers make process groups of their
    own and outlive their parents (re-parented to init), but stay in the server's
    session. So ``pids()`` collects the group, the session and every descendant, and
    ``kill()`` leaves no Shoal process behind, as a machine crash would.
    """

    def __init__(self, storage: Path, log_dir: Path, port: int | None = None, env: dict[str, str] | None = None):
        self.storage = storage
        self.log_dir = log_dir
        self.port = port or free_port()
        self.extra_env = dict(env or {})  # e.g. SHOAL__LIMITS__... settings for this server
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.leftovers: list[int] = []
        self._stderr_path: Path | None = None
        self.scheme = "http"  # "https" for a server with service.enable_tls
        self.opener = _NO_PROXY  # what _wait_ready asks /readyz with (an HTTPS one for a TLS server)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        python = os.environ.get("SHOAL_TEST_SERVER_PYTHON", sys.executable)
        return [python, "-m", "gateway", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--storage", str(self.storage)]

    def _env(self) -> dict[str, str]:
        # The server must not see the newest qdrant-client that tests/latest puts on
        # PYTHONPATH: it runs on the project's own environment.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start and wait for ``/readyz``. Ray's start-up can time out on a loaded
        2-core machine, so one failed start is retried (with a warning carrying the
        failure, so flakiness stays visible) before the tests fail."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        for attempt in range(1, START_ATTEMPTS + 1):
            why = self._start_once()
            if why is None:
                return
            if attempt < START_ATTEMPTS:
                warnings.warn(f"Shoal server start {self.starts} failed, retrying: {why}\n"
                              f"{self.stderr_tail(15)}", RuntimeWarning, stacklevel=2)
        self._fail(why)

    def _start_once(self) -> str | None:
        self.starts += 1
        self.storage.mkdir(parents=True, exist_ok=True)
        self._stderr_path = self.log_dir / f"server-{self.starts}.stderr"
        stdout_path = self.log_dir / f"server-{self.starts}.stdout"
        with open(stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO_ROOT, env=self._env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
            )
        why = self._wait_ready()
        if why is not None:
            self.kill()  # its Ray processes may outlive it
        return why

    def _wait_ready(self) -> str | None:
        """None once /readyz answers 200, else why not."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return f"server exited with code {code} before /readyz answered 200"
            try:
                with self.opener.open(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return None
                    last_error = f"status {r.status}"
            except (urllib.error.URLError, OSError) as e:
                last_error = repr(e)
            time.sleep(0.25)
        return f"/readyz did not answer 200 within {STARTUP_TIMEOUT:.0f}s ({last_error})"

    def stderr_tail(self, lines: int = 60) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return "(no stderr captured)"
        text = self._stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _fail(self, why: str) -> None:
        cmd = " ".join(self.command())
        pytest.fail(f"Shoal server: {why}\ncommand: {cmd}\n--- stderr tail ---\n"
                    f"{self.stderr_tail()}", pytrace=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> set[int]:
        """Every live process that belongs to this server: group, session, descendants."""
        if self.proc is None:
            return set()
        root = self.proc.pid
        table = _proc_table()
        found = {pid for pid, (_, pgid, sid) in table.items() if pgid == root or sid == root}
        if root in table:
            found.add(root)
        grew = True
        while grew:
            children = {pid for pid, (ppid, _, _) in table.items() if ppid in found}
            grew = not children <= found
            found |= children
        return found

    def shard_actors(self) -> list[int]:
        """Pids of this server's shard actor processes (Ray names them ``ray::ShardActor``)."""
        found = []
        for pid in self.pids():
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"ray::ShardActor"):
                    found.append(pid)
            except OSError:
                pass
        return found

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM the server process alone (as ``docker stop`` does) and wait for a
        graceful shutdown, which must also end its Ray processes; SIGKILL everything
        after ``grace`` s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_leftovers(grace=10.0)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL every Shoal process at once, as a power cut would."""
        if self.proc is None:
            return
        victims = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        # SIGKILL is delivered asynchronously: wait until the victims are really gone.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and victims & set(_proc_table()):
            time.sleep(0.1)

    def _reap_leftovers(self, grace: float) -> None:
        """After the server exits its Ray processes should follow; record and kill
        stragglers (``leftovers`` lets a test assert a clean shutdown)."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.pids() - {self.proc.pid}:
            time.sleep(0.2)
        self.leftovers = sorted(self.pids() - {self.proc.pid})
        for pid in self.leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, graceful: bool = True) -> None:
        """Stop (SIGTERM, or SIGKILL of everything) and start again on the same storage."""
        if graceful:
            self.stop()
        else:
            self.kill()
        self.start()

    def ensure_up(self) -> None:
        """Start again if a previous test left the server dead, so later tests still run."""
        if not self.alive():
            self.start()


def client_version() -> str:
    return importlib.metadata.version("qdrant-client")


def _compatible_with_server(version: str) -> bool:
    """qdrant-client's own rule: same major, minor within 1. Shoal reports 1.15.x."""
    major, minor = (int(x) for x in version.split(".")[:2])
    return major == 1 and abs(minor - 15) <= 1


@pytest.fixture(scope="session")
def shoal_server(tmp_path_factory):
    """The session's Shoal server (None when SHOAL_TEST_AGAINST_MEMORY=1)."""
    if AGAINST_MEMORY:
        yield None
        return
    base = tmp_path_factory.mktemp("shoal")
    server = ShoalServer(storage=base / "storage", log_dir=base)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _memory_twin():
    """The :memory: client that stands in for Shoal when SHOAL_TEST_AGAINST_MEMORY=1."""
    from qdrant_client import QdrantClient

    return QdrantClient(":memory:")


def _connect(server: ShoalServer, timeout: int = CLIENT_TIMEOUT):
    """A REST client pointed at ``server``.

    With a client of a compatible version the server's reported version must pass
    qdrant-client's compatibility check without any warning; with the newest client
    (minor far above 15) the check would warn by design, so it is skipped.
    """
    from qdrant_client import QdrantClient

    version = client_version()
    if not _compatible_with_server(version):
        return QdrantClient(host="127.0.0.1", port=server.port, prefer_grpc=False,
                            timeout=timeout, check_compatibility=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = QdrantClient(host="127.0.0.1", port=server.port, prefer_grpc=False,
                              timeout=timeout)
    bad = [str(w.message) for w in caught if "version" in str(w.message).lower()]
    if bad:
        raise AssertionError(f"qdrant-client {version} version check against Shoal: {bad}")
    return client


@pytest.fixture
def make_client(shoal_server, request):
    """Factory of qdrant clients pointed at Shoal (REST, no gRPC)."""
    if shoal_server is None:
        twin = request.getfixturevalue("_memory_twin")
        yield lambda **_: twin
        return
    shoal_server.ensure_up()
    made = []

    def factory(timeout: int = CLIENT_TIMEOUT):
        made.append(_connect(shoal_server, timeout))
        return made[-1]

    yield factory
    for client in made:
        with contextlib.suppress(Exception):
            client.close()


@pytest.fixture(scope="session")
def shoal_session(shoal_server, request):
    """A session-wide client to Shoal, for module-scoped data sets."""
    if shoal_server is None:
        yield request.getfixturevalue("_memory_twin")
        return
    client = _connect(shoal_server)
    yield client
    with contextlib.suppress(Exception):
        client.close()


@pytest.fixture
def shoal(make_client):
    """A qdrant client talking to Shoal (or the :memory: twin)."""
    return make_client()


@pytest.fixture
def memory():
    """A fresh ``QdrantClient(":memory:")``: the oracle."""
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    yield client
    client.close()


@pytest.fixture(scope="session")
def against_memory() -> bool:
    """True when the "Shoal" side is the :memory: twin (server-only facts can't be checked)."""
    return AGAINST_MEMORY


@pytest.fixture(params=SHARD_COUNTS, ids=lambda n: f"shards{n}")
def shard_number(request) -> int:
    """Every scenario runs on a 1-shard and on a 3-shard collection."""
    return request.param


@pytest.fixture
def collection_names(shoal):
    """Factory of unique collection names; each is dropped from Shoal afterwards."""
    names = []

    def new(prefix: str = "c") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    yield new
    for name in names:
        with contextlib.suppress(Exception):
            shoal.delete_collection(name)


@pytest.fixture
def base_url(shoal_server) -> str:
    """Root URL for raw-HTTP tests; they need a real server."""
    if shoal_server is None:
        pytest.skip("raw HTTP needs a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    shoal_server.ensure_up()
    return shoal_server.url


@pytest.fixture
def restartable_server(shoal_server):
    """The session's server, for a test that stops and starts it; left running afterwards."""
    if shoal_server is None:
        pytest.skip("restarts need a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    shoal_server.ensure_up()
    yield shoal_server
    shoal_server.ensure_up()


def pytest_report_header(config):
    try:
        version = client_version()
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    mode = "against :memory: twin" if AGAINST_MEMORY else "against a Shoal server"
    return f"shoal api tests: qdrant-client {version}, {mode}"
