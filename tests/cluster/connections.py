"""Which TCP connections of a test's processes leave the test network.

A multi-machine test is only worth something if its "machines" talk over the
test network and nowhere else: a node that reaches another through the real
machine's address (or a process that phones home) would survive a ``cut`` that
should have isolated it. ``escapes`` lists every such connection; tests assert
it returns nothing.

It reads ``ss -tnp`` (every TCP socket that is not listening: established,
connecting, closing) in each of the network's namespaces, where every socket
belongs to the test, and in the root namespace, where only the sockets of the
given pids are the test's.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass

from tests.cluster.netns import Network

_PID = re.compile(r"pid=(\d+)")


@dataclass(frozen=True)
class Connection:
    namespace: str  # "root" for the root namespace
    local: str
    peer: str
    users: str  # ss's process column, e.g. users:(("raylet",pid=12,fd=30))

    @property
    def pids(self) -> set[int]:
        return {int(p) for p in _PID.findall(self.users)}

    @property
    def peer_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        host = self.peer.rsplit(":", 1)[0].strip("[]").split("%")[0]
        address = ipaddress.ip_address(host)
        return getattr(address, "ipv4_mapped", None) or address

    def __str__(self) -> str:
        return f"{self.namespace}: {self.local} -> {self.peer} {self.users}"


def connections(namespace: str | None) -> list[Connection]:
    """The TCP connections in ``namespace`` (None: the root namespace)."""
    argv = ["ss", "-tnpH"]
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()  # state, recv-q, send-q, local, peer[, users]
        if len(fields) >= 5:
            found.append(Connection(namespace or "root", fields[3], fields[4], " ".join(fields[5:])))
    return found


def escapes(network: Network, pids: set[int]) -> list[Connection]:
    """Connections of the test whose peer is neither loopback nor in the network's
    subnet: those in the network's namespaces, and those of ``pids`` in the root
    namespace."""
    found = [c for host in network.hosts for c in connections(host.name)]
    found += [c for c in connections(None) if c.pids & pids]
    return [c for c in found if not (c.peer_ip.is_loopback or c.peer_ip in network.subnet)]
