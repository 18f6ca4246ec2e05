"""Starting and stopping a Shoal server for ``--start-server``, and waiting for readiness.

The server is started as ``python -m gateway serve --host 127.0.0.1 --port <free>
--storage <tmpdir>`` from the repository root, in a new session so that its process group
holds the gateway and whatever it spawns (Ray's processes) and can be stopped, and
measured, as one tree. Stop sends SIGTERM to that group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from bench import procmem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen | None = None, on_poll=None) -> None:
    """Poll GET {url}/readyz until it answers 200; raise with the reason on timeout.

    ``on_poll()`` runs before each poll (ManagedServer records the server's tree there).
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if on_poll is not None:
            on_poll()
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url}/readyz not ready after {timeout_s:.0f}s ({last})")


class ManagedServer:
    """A Shoal server owned by the benchmark: started in __enter__, stopped in __exit__."""

    def __init__(self, repo_root: str, ready_timeout_s: float = 180.0, log_path: str | None = None):
        self.repo_root = repo_root
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage = tempfile.mkdtemp(prefix="bench-shoal-")
        # Outside the storage dir, which is removed on stop: the log outlives the run.
        self.log_path = log_path or tempfile.mkstemp(prefix="bench-shoal-", suffix=".log")[1]
        self.proc: subprocess.Popen | None = None
        self._seen: dict[int, int | None] = {}  # pid -> start ticks, every process of the tree seen

    def remember_tree(self) -> None:
        """Record the server's current process tree. Ray starts its workers in sessions of
        their own and they are re-parented when raylet dies, so the tree at stop time can
        miss them; every process ever seen in it is stopped instead."""
        if self.proc is None:
            return
        for pid in procmem.process_tree(self.proc.pid):
            if pid != os.getpid() and pid not in self._seen:
                self._seen[pid] = procmem.start_ticks(pid)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server not started")
        return self.proc.pid

    def __enter__(self) -> "ManagedServer":
        cmd = [
            sys.executable, "-m", "gateway", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--storage", self.storage,
        ]  # fmt: skip
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=self.repo_root, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_ready(self.url, self.ready_timeout_s, self.proc, on_poll=self.remember_tree)
            self.remember_tree()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after ``grace_s``.

        Every process seen in the server's tree (see ``remember_tree``) that outlives the
        gateway's own shutdown is killed too, if it is still the same process (same start
        time), so a recycled pid is never hit.
        """
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        self.remember_tree()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid, started in self._seen.items():
            if started is not None and procmem.start_ticks(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        self.proc = None
        shutil.rmtree(self.storage, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-chars:].decode(errors="replace")
        except OSError:
            return ""
