"""Shoal gateways on the hosts of a ``RayCluster``, and where their shards listen.

A gateway is ``python -m gateway serve --ray-address`` started on a host of the
cluster's network (``RayCluster.popen``: the cluster's environment, a log in the
network's scratch folder), attached to that host's Ray node through
``SHOAL__CLUSTER__NODE_IP_ADDRESS``, since Ray would otherwise pick one of the
raylets every host's ``ps`` shows. With a cluster secret the shards it starts
listen on TCP at their node's address and a gateway on another host dials them;
without one it reaches shards on other hosts through Ray actor calls.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.netns import Host
from tests.cluster.raynodes import RayCluster, RayNode, until
from tests.conftest import cmdline as _cmdline


@dataclass
class Gateway:
    proc: subprocess.Popen
    host: Host
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{self.port}"

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200; an error with the log's tail if the gateway exited."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"the gateway on {self.host.address} exited with {self.proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def wait_ready(self, seconds: float = 120.0) -> Gateway:
        until(self.ready, seconds, f"the gateway at {self.url} to answer /readyz")
        return self

    def stop(self, seconds: float = 90.0) -> None:
        """SIGTERM, and wait for the gateway to stop its shards and exit
        (``RayCluster.stop`` kills what is left of it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=seconds)


def launch(cluster: RayCluster, host: Host, port: int, storage: Path, secret: str | None = None,
           env: dict[str, str] | None = None, peers: list[str] | None = None) -> Gateway:
    """Start a gateway on ``host`` listening at its address and ``port``, storing
    in ``storage`` (its Raft takes ``port + 2``: on the host's loopback, or with
    ``peers``, the other gateways' Raft addresses, on its address); returns at
    once, see ``Gateway.wait_ready``. ``env``: more settings (``SHOAL__…``)."""
    env = {"SHOAL__CLUSTER__NODE_IP_ADDRESS": host.address, **(env or {})}
    if secret is not None:
        env["SHOAL__CLUSTER__SECRET"] = secret
    name = f"gateway-{len(cluster.drivers) + 1}"
    argv = [sys.executable, "-m", "gateway", "serve", "--host", host.address, "--port", str(port),
            "--storage", str(storage)]
    if peers:
        argv += ["--raft-host", host.address, "--peers", ",".join(peers)]
    proc = cluster.popen(host, argv, name, env=env)
    return Gateway(proc, host, port, cluster.network.scratch / f"{name}.log")


def start(cluster: RayCluster, host: Host, port: int, storage: Path, secret: str | None = None,
          seconds: float = 120.0, env: dict[str, str] | None = None) -> Gateway:
    """``launch``, then wait until it answers ``/readyz``."""
    return launch(cluster, host, port, storage, secret, env).wait_ready(seconds)


def start_several(cluster: RayCluster, host: Host, ports: list[int], scratch: Path, secret: str,
                  env: dict[str, str] | None = None) -> list[Gateway]:
    """One gateway per port on ``host``, peers of one metadata Raft (each at its
    port + 2), storage ``scratch/gateway-<port>``; once all answer ``/readyz``."""
    raft = [f"{host.address}:{port + 2}" for port in ports]
    made = [launch(cluster, host, port, scratch / f"gateway-{port}", secret, env,
                   peers=[r for r in raft if r != f"{host.address}:{port + 2}"]) for port in ports]
    return [g.wait_ready() for g in made]


def shard_pids(node: RayNode) -> set[int]:
    """The shard actor processes of ``node``."""
    return {pid for pid in node.pids() if _cmdline(pid).startswith(b"ray::ShardActor")}


def shard_listeners(cluster: RayCluster) -> list[str]:
    """The TCP listeners (``ss -tlnpH`` lines) of shard actor processes bound to
    their host's own address (Ray's own listeners in the same processes bind
    every address, ``*``)."""
    found = []
    for node in cluster.nodes:
        pids = shard_pids(node)
        out = subprocess.run(["ip", "netns", "exec", node.host.name, "ss", "-tlnpH"], capture_output=True,
                             text=True, check=True, timeout=30).stdout
        found += [line for line in out.splitlines() if line.split()[3].startswith(node.host.address + ":")
                  and any(f"pid={pid}," in line for pid in pids)]
    return found
