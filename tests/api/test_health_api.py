"""Ray's failures, seen from the API (cluster.health, cluster.runtime):

- the server's Ray is its own: another Ray cluster running on the machine is not
  joined, and its end changes nothing;
- a Ray head process killed: /readyz and every request answer 503 at once, and
  the server exits non-zero after the grace period with one clear ERROR line;
- a shard process stopped: its collection answers 503 at once, /readyz names it,
  and the shard is restarted and serves all its points again.

Each test starts servers of its own (they are changed or killed here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cluster.runtime import process_started
from tests.api.rawhttp import call, error_text
from tests.conftest import AGAINST_MEMORY, ShoalServer, _proc_table, free_port
from tests.conftest import cmdline as _cmdline

pytestmark = pytest.mark.skipif(AGAINST_MEMORY, reason="needs real Shoal servers")

GRACE = 10.0  # cluster.ray_down_grace_s's default


class Server(ShoalServer):
    """A ShoalServer that never inherits RAY_ADDRESS (it must start its own Ray)."""

    def __init__(self, storage: Path, log_dir: Path, env: dict[str, str] | None = None):
        super().__init__(storage, log_dir, env=env)

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if "RAY_ADDRESS" not in self.extra_env:
            env.pop("RAY_ADDRESS", None)
        return env

    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace") if self._stderr_path else ""


def _ray_process(server: ShoalServer, binary: bytes) -> int:
    """The pid of one of the server's Ray head processes (``raylet``, ``gcs_server``)."""
    found = [pid for pid in server.pids() if _cmdline(pid).split(b"\0")[0].endswith(b"/" + binary)]
    assert len(found) == 1, f"{binary!r} among the server's processes: {found}"
    return found[0]


def _session(leader: int) -> set[int]:
    """Every live process of the session ``leader`` started (it and what it spawned)."""
    return {pid for pid, (_, _, sid) in _proc_table().items() if sid == leader}


def _until(predicate, seconds: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(step)


def _collection(url: str, name: str, shards: int, points: int) -> None:
    status, body = call("PUT", f"{url}/collections/{name}", {"vectors": {"size": 2, "distance": "Dot"},
                                                             "shard_number": shards})
    assert status == 200, body
    batch = [{"id": i, "vector": [1.0, float(i)], "payload": {"i": i}} for i in range(points)]
    assert call("PUT", f"{url}/collections/{name}/points?wait=true", {"points": batch})[0] == 200


def _search(url: str, name: str, timeout: float = 30) -> tuple[int, object, float]:
    started = time.monotonic()
    status, body = call("POST", f"{url}/collections/{name}/points/search", {"vector": [0.0, 1.0], "limit": 3},
                        timeout=timeout)
    return status, body, time.monotonic() - started


@pytest.fixture
def short_tmp():
    """A short private folder (Ray's socket paths must stay under ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="shoal-t-"))
    yield path
    for _ in range(5):  # a Ray process that is still dying may write a last file
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            break
        time.sleep(1)


def test_another_ray_cluster_is_not_joined_and_its_end_changes_nothing(short_tmp):
    # The other cluster and the server share a temp folder and a home, as two
    # programs of one user do, but not this machine's: TMPDIR keeps the other
    # cluster's address file (which `ray.init()` alone would attach to) away from
    # every other program here, and HOME shows where Ray would write its token.
    env = {"TMPDIR": str(short_tmp / "t"), "HOME": str(short_tmp / "home"), "RAY_USAGE_STATS_ENABLED": "0"}
    for folder in ("t", "home"):
        (short_tmp / folder).mkdir()
    other_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps the other cluster on loopback.
    other_env.update(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    with open(short_tmp / "other-ray.log", "wb") as out:
        other = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1",
             "--port", str(free_port(low=20_000)), "--num-cpus", "1", "--include-dashboard", "false", "--block"],
            env=other_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(short_tmp / "storage", short_tmp, env)
    # Folders an embedded Ray left behind: a killed server's goes at the next start,
    # a running one's stays (this test process stands in for its owner).
    stale, live = short_tmp / "t" / "shoal-ray-stale", short_tmp / "t" / "shoal-ray-live"
    for folder, owner in ((stale, "999999999 1"), (live, f"{os.getpid()} {process_started(os.getpid())}")):
        folder.mkdir()
        (folder / "owner").write_text(owner)
    try:
        _until(lambda: (short_tmp / "t" / "ray" / "ray_current_cluster").exists() or other.poll() is not None,
               90, "the other Ray cluster to start")
        assert other.poll() is None, (short_tmp / "other-ray.log").read_text(errors="replace")[-2000:]
        server.start()
        assert not stale.exists() and live.exists()
        (own,) = set((short_tmp / "t").glob("shoal-ray-*")) - {live}
        assert own.stat().st_mode & 0o777 == 0o700
        _collection(server.url, "mine", shards=2, points=20)
        # The shard actors run under the server's own Ray, not the other cluster's.
        assert len(server.shard_actors()) == 2
        assert not any(_cmdline(p).startswith(b"ray::ShardActor") for p in _session(other.pid))

        for pid in _session(other.pid):  # the other cluster ends, all at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        other.wait(timeout=10)
        _until(lambda: not _session(other.pid), 15, "the other cluster's processes to end")
        time.sleep(3)  # three rounds of health checks

        assert server.alive()
        status, body, _ = _search(server.url, "mine")
        assert status == 200 and len(body["result"]) == 3
        assert call("GET", f"{server.url}/readyz") == (200, "all shards are ready")
        # A token of its own, given through the environment: none written to the
        # user's ~/.ray, and no warning about token authentication at start.
        assert not (short_tmp / "home" / ".ray" / "auth_token").exists()
        assert "Token authentication is enabled" not in server.stderr()
        assert server.stop() == 0 and not own.exists()  # its folder goes with it
    finally:
        for pid in _session(other.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            other.wait(timeout=10)
        server.kill()


@pytest.mark.slow
@pytest.mark.parametrize("binary, said", [(b"raylet", "raylet"), (b"gcs_server", "GCS server")])
def test_a_dead_ray_head_answers_503_then_the_server_exits(tmp_path, binary, said):
    server = Server(tmp_path / "storage", tmp_path)
    server.start()
    try:
        _collection(server.url, "c", shards=1, points=10)
        assert _search(server.url, "c")[0] == 200
        killed_at = time.monotonic()
        os.kill(_ray_process(server, binary), signal.SIGKILL)

        status, text = _until(lambda: (r := call("GET", f"{server.url}/readyz", timeout=5))[0] == 503 and r,
                              5, "/readyz to answer 503")
        assert f"Ray's {said}" in text and "SIGKILL" in text
        status, body, took = _search(server.url, "c", timeout=GRACE)
        assert status == 503 and took < 1.0, (status, body, took)
        assert error_text(body).startswith("Shard temporarily unavailable: Ray is unavailable: ")
        assert time.monotonic() - killed_at < GRACE / 2  # told well within the grace period
        assert call("GET", f"{server.url}/healthz", timeout=5)[0] == 503
        assert call("GET", f"{server.url}/collections", timeout=5)[0] == 503

        code = server.proc.wait(timeout=GRACE + 30)
        assert code != 0
        assert time.monotonic() - killed_at < GRACE + 20, "the exit took too long"
        errors = [line for line in server.stderr().splitlines() if " ERROR " in line]
        assert len(errors) == 1, errors
        assert "cluster.health" in errors[0] and f"Ray's {said}" in errors[0] and "the server exits" in errors[0]
    finally:
        server.kill()


@pytest.mark.slow
def test_a_stopped_shard_answers_503_then_is_restarted_with_its_data(tmp_path):
    server = Server(tmp_path / "storage", tmp_path, {"SHOAL__CLUSTER__SHARD_RESTART_AFTER_S": "5",
                                                     "SHOAL__CLUSTER__SHARD_CALL_TIMEOUT_S": "4"})
    server.start()
    stopped = None
    try:
        _collection(server.url, "s", shards=2, points=100)
        mine = set(server.shard_actors())
        _collection(server.url, "o", shards=1, points=5)
        stopped = min(mine)
        os.kill(stopped, signal.SIGSTOP)
        stopped_at = time.monotonic()

        # A request in flight when the shard stopped ends within the call bound.
        status, body, took = _search(server.url, "s")
        assert status in (408, 503) and took < 4 + 1.5, (status, body, took)
        status, text = _until(lambda: (r := call("GET", f"{server.url}/readyz", timeout=5))[0] == 503 and r,
                              6, "/readyz to answer 503")
        assert "of collection `s`" in text and "does not answer" in text, text
        status, body, took = _search(server.url, "s")
        assert status == 503 and took < 1.0, (status, body, took)
        assert error_text(body).startswith("Shard temporarily unavailable: shard ")
        assert _search(server.url, "o")[0] == 200  # other collections are served
        assert time.monotonic() - stopped_at < 5  # all that before the restart

        # Ray restarts the shard; it reloads its storage and answers again.
        def counted():
            status, body = call("POST", f"{server.url}/collections/s/points/count", {}, timeout=10)
            return status == 200 and body["result"]["count"] == 100
        _until(counted, 60, "the restarted shard to answer with all its points", step=0.5)
        assert not os.path.exists(f"/proc/{stopped}") or _cmdline(stopped) == b""
        _until(lambda: call("GET", f"{server.url}/readyz", timeout=5)[0] == 200, 10, "/readyz to answer 200")
        assert _search(server.url, "s")[0] == 200
        assert "has not answered for" in server.stderr() and "Ray restarts it" in server.stderr()
        assert server.stop() == 0  # and it still shuts down cleanly
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
                os.kill(stopped, signal.SIGCONT)
        server.kill()
