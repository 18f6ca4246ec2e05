"""Closed-loop HTTP load against one endpoint with N concurrent keep-alive connections.

Two generators, one result shape:
- ``wrk`` (preferred): C, epoll, one thread (``-t1``) driving all N connections, with
  ``wrk_rotate.lua`` rotating pre-formatted request bodies. It costs the server the least
  CPU on this 2-core machine (measured in bench/README.md).
- ``aiohttp``: ``bench/aio_client.py`` in a separate process, used when wrk is missing.
Both are bounded by a duration and a request count, and target loopback URLs only.

The result dict: qps, requests, seconds, p50/p90/p99 latency (ms), errors, client CPU
seconds (from the child's rusage, to show what the client took from the server).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

WRK_LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_rotate.lua")
WRK_INSTALL_HINT = (
    "wrk is not installed; the benchmark falls back to the slower aiohttp client, which "
    "takes more CPU from the server. Install wrk with:  apt-get install -y wrk  "
    "(Debian/Ubuntu; `brew install wrk` on macOS)"
)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def choose(loadgen: str) -> str:
    """Resolve "auto" to "wrk" when installed; refuse "wrk" when it is not."""
    if loadgen == "auto":
        if wrk_path():
            return "wrk"
        print("NOTE: " + WRK_INSTALL_HINT, file=sys.stderr)
        return "aiohttp"
    if loadgen == "wrk" and not wrk_path():
        raise RuntimeError(WRK_INSTALL_HINT)
    if loadgen not in ("wrk", "aiohttp"):
        raise ValueError(f"unknown load generator {loadgen!r}")
    return loadgen


def check_loopback(url: str) -> None:
    """The benchmark only ever loads a server on this machine."""
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load generation is loopback-only; refusing {url}")


def write_bodies(path: str, bodies: list[bytes]) -> None:
    """One JSON body per line (orjson output never contains a raw newline)."""
    with open(path, "wb") as fh:
        for body in bodies:
            if b"\n" in body:
                raise ValueError("a request body contains a newline")
            fh.write(body + b"\n")


def _run_child(cmd: list[str], timeout_s: float) -> str:
    """Run cmd to completion and return its stdout; its CPU time lands in RUSAGE_CHILDREN."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise RuntimeError(f"load generator timed out: {' '.join(cmd)}")
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return stdout.decode()


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _parse(stdout: str, tag: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise RuntimeError(f"load generator printed no {tag} line:\n{stdout[-2000:]}")


def run(
    url: str,
    bodies_file: str,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    generator: str,
    timeout_s: float = 30.0,
) -> dict:
    """Load ``url`` with POSTs of the bodies in rotation; returns the result dict."""
    check_loopback(url)
    cpu0 = _children_cpu()
    if generator == "wrk":
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        cmd = [
            wrk_path() or "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={int(timeout_s)}s",
            "-s",
            WRK_LUA,
            base,
            "--",
            bodies_file,
            parts.path,
            str(max_requests),
        ]
        stdout = _run_child(cmd, duration_s + timeout_s + 30)
        raw = _parse(stdout, "WRKJSON")
        errors = sum(raw[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    elif generator == "aiohttp":
        cmd = [
            sys.executable,
            "-m",
            "bench.aio_client",
            "--url",
            url,
            "--bodies",
            bodies_file,
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration_s),
            "--max-requests",
            str(max_requests),
            "--timeout",
            str(timeout_s),
        ]
        stdout = _run_child(cmd, duration_s + timeout_s + 60)
        raw = _parse(stdout, "AIOJSON")
        errors = raw["err_status"] + raw["err_exception"]
    else:
        raise ValueError(f"unknown load generator {generator!r}")
    client_cpu = _children_cpu() - cpu0
    seconds = raw["duration_us"] / 1e6
    return {
        "generator": generator,
        "concurrency": concurrency,
        "qps": raw["requests"] / seconds if seconds else 0.0,
        "requests": raw["requests"],
        "seconds": seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
        "client_cpu_s": client_cpu,
        "client_cpu_us_per_request": client_cpu / raw["requests"] * 1e6 if raw["requests"] else None,
        "raw": raw,
    }


def wait_a_moment(seconds: float = 0.5) -> None:
    """Let the server drain between runs so one run's tail does not bleed into the next."""
    time.sleep(seconds)
