"""Several "machines" on one Linux machine: network namespaces on a private bridge.

A ``Network`` is a bridge in the root namespace holding the first address of a
private /24, and one namespace per host, each joined to the bridge by a veth pair
and given its own address. Processes started in a host's namespace see only its
``lo`` and ``eth0``, so a test can cut one host off the network for real, as a
pulled cable would, while its own processes keep talking to each other.

Other engineers run tests on the same machine at the same time, so everything a
run makes carries a random token (``shoal-<6 hex>-…``; interface names fit
Linux's 15 characters), its subnet is drawn at random inside 10.0.0.0/8 and
checked against every route and address on the machine, and it is written down
*before* it is made, in a record under ``STATE_DIR`` naming the owning process
(pid and start time). ``close()`` removes it all, from a fixture finaliser and
from an atexit hook; a later run removes the leftovers of runs whose owner died
(SIGKILL, a crash) and never touches what a live run owns.

Needs root and iproute2; ``cut``/``heal`` need iptables (see ``missing()``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.runtime import process_started

# /run is cleared at boot, as namespaces are: a record never outlives what it names.
STATE_DIR = Path("/run/shoal-netns")
PREFIX = "shoal-"
INSIDE_LINK = "eth0"  # each host's end of its veth pair, inside its namespace
MAX_HOSTS = 99  # "shoal-abcdef-99" is 15 characters, Linux's limit for interface names


def missing(iptables: bool = False) -> str | None:
    """Why this machine cannot run network-namespace tests, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    if iptables and shutil.which("iptables") is None:
        return "`iptables` is not installed (scripts/test installs it where apt-get works)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; a failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def popen(namespace: str | None, argv: list[str], env: dict[str, str], log: Path | None = None,
          cwd: Path | None = None, pipes: bool = False) -> subprocess.Popen:
    """Start ``argv`` in ``namespace`` (None: the root namespace) in a session and
    process group of its own, so that it and everything it starts can be found and
    killed by session id. ``ip netns exec`` execs the command: the pid returned is
    the command's own. Output goes to ``log``; with ``pipes`` stdin and stdout are
    pipes to this process instead (stderr still goes to ``log``)."""
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, start_new_session=True, stderr=out,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
        )
    finally:
        if log is not None:
            out.close()


@dataclass(frozen=True)
class Host:
    """One "machine": a namespace, its address, and the bridge end of its veth."""

    name: str  # the namespace, e.g. shoal-1a2b3c-n1
    address: str  # its eth0 address in the network's subnet
    link: str  # its veth's end on the bridge, in the root namespace


class Network:
    """A bridge and ``size`` hosts on a random private /24; see the module docstring."""

    def __init__(self, size: int):
        if not 1 <= size <= MAX_HOSTS:
            raise ValueError(f"1 to {MAX_HOSTS} hosts, not {size}")
        self.token = secrets.token_hex(3)
        self.bridge = f"{PREFIX}{self.token}-br"
        # Files of this run's processes; a short path, as Ray's socket paths must be.
        self.scratch = Path(tempfile.gettempdir()) / f"{PREFIX}net-{self.token}"
        self.record = STATE_DIR / f"{self.token}.json"
        self._cut: set[str] = set()
        self._closed = False
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        with _locked():  # one run at a time removes stale networks and picks a subnet
            _remove_stale()
            self.subnet = _free_subnet(_records())
            gateway, *addresses = list(self.subnet.hosts())[: size + 1]
            self.gateway = str(gateway)
            self.hosts = [Host(f"{PREFIX}{self.token}-n{i}", str(a), f"{PREFIX}{self.token}-{i}")
                          for i, a in enumerate(addresses, 1)]
            self._record = {
                "token": self.token, "owner": os.getpid(), "started": process_started(os.getpid()),
                "subnet": str(self.subnet), "bridge": self.bridge, "scratch": str(self.scratch),
                "namespaces": [h.name for h in self.hosts], "links": [h.link for h in self.hosts],
            }
            self.record.write_text(json.dumps(self._record))  # before anything is made
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        self.scratch.mkdir(mode=0o700)
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        # A host daemon (Docker) may set FORWARD's policy to DROP, and bridged frames
        # go through iptables here (br_netfilter): let the bridge's own traffic pass.
        _iptables(None, "-I", *_forward_rule(self.bridge), check=False)
        for host in self.hosts:
            ip("netns", "add", host.name)
            ip("link", "add", host.link, "type", "veth", "peer", "name", INSIDE_LINK, "netns", host.name)
            ip("link", "set", host.link, "master", self.bridge, "up")
            ip("-n", host.name, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", INSIDE_LINK)
            ip("-n", host.name, "link", "set", INSIDE_LINK, "up")
            ip("-n", host.name, "link", "set", "lo", "up")
        # No default route: every peer (hosts, and the root namespace at the bridge's
        # address) is on the subnet, and a connection to anywhere else fails at once
        # instead of leaving the machine.

    def cut(self, host: Host) -> None:
        """Drop every packet in and out of ``host``'s eth0, silently, as a partition
        would: connections hang rather than fail. Its loopback (its processes among
        themselves, including at its own address) still works."""
        for chain, direction in (("INPUT", "-i"), ("OUTPUT", "-o")):
            _iptables(host.name, "-I", chain, direction, INSIDE_LINK, "-j", "DROP")
        self._cut.add(host.name)

    def heal(self, host: Host) -> None:
        """Undo ``cut``."""
        for chain, direction in (("INPUT", "-i"), ("OUTPUT", "-o")):
            _iptables(host.name, "-D", chain, direction, INSIDE_LINK, "-j", "DROP")
        self._cut.discard(host.name)

    def popen(self, host: Host | None, argv: list[str], env: dict[str, str], log: Path | None = None,
              cwd: Path | None = None, pipes: bool = False) -> subprocess.Popen:
        """``popen`` in ``host``'s namespace (None: the root namespace)."""
        return popen(host.name if host else None, argv, env, log, cwd, pipes)

    def run(self, host: Host, *argv: str, timeout: float = 30) -> str:
        """Run a short command in ``host``'s namespace; its stdout, or an error."""
        done = subprocess.run(["ip", "netns", "exec", host.name, *argv], capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {host.name}: {done.stderr.strip()}")
        return done.stdout

    def leftovers(self) -> list[str]:
        """Namespaces and interfaces of this network that exist right now."""
        names = ip("netns", "list").stdout + ip("-o", "link", "show").stdout
        return sorted({w.split("@")[0].rstrip(":") for w in names.split() if f"{PREFIX}{self.token}-" in w})

    def close(self) -> None:
        """Remove everything: the processes left in the namespaces, the namespaces,
        veths, bridge and iptables rule, the scratch folder, the record. Safe to call
        twice, and after a partial start."""
        if self._closed or os.getpid() != self._record["owner"]:
            return  # a forked child's atexit must not tear down its parent's network
        self._closed = True
        atexit.unregister(self.close)
        _remove(self._record)


def _remove(record: dict) -> None:
    """Tear down what ``record`` names, ignoring what is already gone."""
    for name in record["namespaces"]:
        _kill_inside(name)
        ip("netns", "del", name, check=False)
    for link in [*record["links"], record["bridge"]]:
        ip("link", "del", link, check=False)  # deleting one end of a veth deletes both
    _iptables(None, "-D", *_forward_rule(record["bridge"]), check=False)
    shutil.rmtree(record["scratch"], ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{record['token']}.json").unlink()


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process still in ``namespace``: only this library's runs start
    processes there, and one left behind would keep the namespace alive."""
    for _ in range(50):
        done = ip("netns", "pids", namespace, check=False)
        pids = [int(p) for p in done.stdout.split()] if done.returncode == 0 else []
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_stale() -> list[str]:
    """Remove the networks of earlier runs whose owner is dead; the tokens removed.
    A record whose owner still runs (same pid, same start time) is left alone."""
    with _locked():
        return _remove_stale()


def _remove_stale() -> list[str]:
    removed = []
    for record in _records():
        if process_started(record["owner"]) != record["started"]:
            _remove(record)
            removed.append(record["token"])
    return removed


def _records() -> list[dict]:
    """Every run's record (written whole by one ``write_text`` under the lock)."""
    found = []
    for path in STATE_DIR.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text()))
    return found


@contextlib.contextmanager
def _locked():
    with open(STATE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_subnet(records: list[dict], attempts: int = 100) -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that overlaps no route or address on the machine, nor
    another run's subnet (recorded before its bridge has a route). Second octets
    64-239 stay clear of the 10.0-10.63 ranges many networks use by default."""
    routes = json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout)
    addresses = [a for link in json.loads(ip("-j", "-4", "addr", "show").stdout) for a in link["addr_info"]]
    taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes if r["dst"] != "default"]
    taken += [ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False) for a in addresses]
    taken += [ipaddress.ip_network(r["subnet"]) for r in records]
    rng = random.SystemRandom()
    for _ in range(attempts):
        candidate = ipaddress.ip_network(f"10.{rng.randrange(64, 240)}.{rng.randrange(256)}.0/24")
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise RuntimeError("no free /24 found inside 10.0.0.0/8")


def _forward_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def _iptables(namespace: str | None, *args: str, check: bool = True) -> None:
    """iptables in ``namespace`` (None: the root namespace); ``-w``: wait for the
    machine-wide xtables lock that concurrent runs share."""
    if shutil.which("iptables") is None:
        if check:
            raise RuntimeError("iptables is not installed: hosts cannot be cut off")
        return
    argv = ["iptables", "-w", "10", *args]
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
