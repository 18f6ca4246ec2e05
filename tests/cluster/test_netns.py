"""The multi-machine test library, proven with plain Ray (no Shoal server):

- a network of namespaces: hosts reach each other and the root namespace over
  their subnet and nothing else; ``cut`` drops a host's traffic silently and
  ``heal`` restores it; ``close`` and a later run's stale sweep leave nothing;
- ``escapes`` reports a connection that leaves the subnet;
- Ray over it: a task pinned on each of four nodes reports four addresses; a
  cut-off node runs nothing until healed; a node killed with SIGKILL is
  reported dead and rejoins when restarted; a driver without the cluster's
  token is refused; a long partition gets a node declared dead.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.cluster.conftest import need
from tests.cluster.connections import connections, escapes
from tests.cluster.netns import STATE_DIR, Network, ip, missing, remove_stale
from tests.cluster.raynodes import until
from tests.conftest import _proc_table

PORT = 7000
OUTSIDE = "198.51.100.7"  # TEST-NET-2: an address outside every test subnet
LISTEN = f"import socket, time; s = socket.create_server(('0.0.0.0', {PORT}), backlog=64); time.sleep(600)"
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("ok")
except TimeoutError:
    print("timeout")
except OSError as e:
    print(e.strerror)
"""


def connect(network: Network, host, address: str, timeout: float = 2.0) -> str:
    """"ok", "timeout" or the error text of a TCP connect from ``host`` to ``address:PORT``."""
    return network.run(host, sys.executable, "-c", PROBE, address, str(PORT), str(timeout)).strip()


def listen(network: Network, host) -> None:
    """A TCP listener on ``host``, port PORT, every address; it lives until the network closes."""
    network.popen(host, [sys.executable, "-c", LISTEN], dict(os.environ))
    until(lambda: connect(network, host, "127.0.0.1") == "ok", 15, "the listener to listen")


def test_hosts_talk_over_their_subnet_and_nowhere_else(make_network):
    net = make_network(2)
    n1, n2 = net.hosts
    assert net.subnet.subnet_of(ipaddress.ip_network("10.0.0.0/8")) and net.subnet.prefixlen == 24
    assert {n1.address, n2.address, net.gateway} <= {str(a) for a in net.subnet.hosts()}
    assert all(len(link) <= 15 and net.token in link for link in (net.bridge, n1.link, n2.link))
    listen(net, n1)

    assert connect(net, n2, n1.address) == "ok"
    with socket.create_connection((n1.address, PORT), timeout=2):  # from the root namespace
        pass
    # No default route: anywhere else is unreachable at once, never reached.
    assert connect(net, n2, OUTSIDE) == "Network is unreachable"


def test_close_and_the_stale_sweep_leave_nothing_and_spare_live_runs(make_network):
    dead, live = make_network(1), make_network(1)
    sleeper = dead.popen(dead.hosts[0], ["sleep", "600"], dict(os.environ))
    assert len(dead.leftovers()) == 3 and len(live.leftovers()) == 3  # namespace, veth, bridge
    # The dead run's owner: our pid, but another start time (its pid was reused).
    record = json.loads(dead.record.read_text())
    dead.record.write_text(json.dumps(dict(record, started="0")))

    removed = remove_stale()  # (also any other dead run's leftovers on this machine)
    assert dead.token in removed and live.token not in removed
    assert dead.leftovers() == [] and not dead.record.exists() and not dead.scratch.exists()
    assert sleeper.wait(timeout=10) == -9  # what ran there is gone with it
    assert len(live.leftovers()) == 3 and live.record.exists()

    live.close()
    assert live.leftovers() == [] and not live.record.exists() and not live.scratch.exists()
    if missing(iptables=True) is None:
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
        assert live.bridge not in rules
    assert not any(r.stem == live.token for r in STATE_DIR.glob("*.json"))


def test_cut_drops_a_hosts_traffic_silently_and_heal_restores_it(make_network):
    need(iptables=True)
    net = make_network(2)
    n1, n2 = net.hosts
    listen(net, n1)
    listen(net, n2)

    net.cut(n1)
    assert connect(net, n2, n1.address, timeout=1) == "timeout"  # dropped, not refused
    assert connect(net, n1, n2.address, timeout=1) == "timeout"
    assert connect(net, n1, n1.address) == "ok"  # its own processes still talk
    with pytest.raises(TimeoutError):  # nor from the root namespace
        socket.create_connection((n1.address, PORT), timeout=1)

    net.heal(n1)
    assert connect(net, n2, n1.address) == "ok"
    assert connect(net, n1, n2.address) == "ok"


def test_escapes_reports_a_connection_that_leaves_the_subnet(make_network):
    net = make_network(1)
    (n1,) = net.hosts
    ip("-n", n1.name, "addr", "add", f"{OUTSIDE}/32", "dev", "lo")  # a foreign address, inside n1
    listen(net, n1)
    hold = f"import socket, time; c = [socket.create_connection((a, {PORT})) for a in ('{OUTSIDE}', '127.0.0.1', '{n1.address}')]; time.sleep(600)"
    net.popen(n1, [sys.executable, "-c", hold], dict(os.environ))
    held = {f"{a}:{PORT}" for a in (OUTSIDE, "127.0.0.1", n1.address)}
    until(lambda: held <= {c.peer for c in connections(n1.name) if "python" in c.users}, 15,
          "the three connections to be established")

    found = escapes(net, set())
    # Both ends of the foreign connection, and nothing of the loopback and subnet ones.
    assert sorted(str(c.peer_ip) for c in found) == [OUTSIDE, OUTSIDE], [str(c) for c in found]
    assert any(c.peer == f"{OUTSIDE}:{PORT}" and "python" in c.users for c in found)


def test_escapes_counts_root_namespace_connections_of_the_given_pids_only(make_network):
    net = make_network(1)
    addresses = [a["local"] for link in json.loads(ip("-j", "-4", "addr", "show").stdout)
                 for a in link["addr_info"] if a.get("scope") == "global"]
    outside = [a for a in addresses if ipaddress.ip_address(a) not in net.subnet and not a.startswith("10.")]
    if not outside:
        pytest.skip("this machine has no global IPv4 address to connect to")
    with socket.create_server((outside[0], 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=2):
            port = server.getsockname()[1]
            mine = [c for c in escapes(net, {os.getpid()}) if c.peer == f"{outside[0]}:{port}"]
            assert len(mine) == 1 and f"pid={os.getpid()}," in mine[0].users
            assert not [c for c in escapes(net, {os.getpid() + 10**7}) if str(port) in c.peer]


# --- Ray over the network -----------------------------------------------------------


def alive(driver) -> dict[str, str]:
    """Address -> node id of every node Ray reports alive."""
    return {n["ip"]: n["id"] for n in driver.ask("nodes") if n["alive"]}


def run_on(driver, node_id: str, seconds: float) -> dict:
    """Run a task pinned on ``node_id``; what it reported within ``seconds``."""
    return driver.ask("wait", task=driver.ask("submit", node=node_id), seconds=seconds)


def test_a_task_pinned_on_each_node_runs_at_that_nodes_address(ray_cluster, ray_driver):
    hosts = [n.host.address for n in ray_cluster.nodes]
    nodes = until(lambda: (a := alive(ray_driver)).keys() == set(hosts) and a, 30, "five nodes alive")
    assert nodes[ray_cluster.network.hosts[4].address] == ray_driver.node_id  # the driver's own node

    tasks = [ray_driver.ask("submit", node=nodes[n.host.address]) for n in ray_cluster.nodes[:4]]
    ips = [ray_driver.ask("wait", task=task, seconds=60) for task in tasks]
    assert ips == [{"done": True, "ip": n.host.address} for n in ray_cluster.nodes[:4]]
    assert len({r["ip"] for r in ips}) == 4
    assert all(ipaddress.ip_address(r["ip"]) in ray_cluster.network.subnet for r in ips)
    assert [str(c) for c in escapes(ray_cluster.network, ray_cluster.pids())] == []


def test_a_cut_off_node_runs_nothing_until_healed(ray_cluster, ray_driver):
    need(iptables=True)
    net, n2 = ray_cluster.network, ray_cluster.nodes[1]
    node_id = until(lambda: alive(ray_driver).get(n2.host.address), 30, "n2 alive")
    assert run_on(ray_driver, node_id, 60) == {"done": True, "ip": n2.host.address}

    net.cut(n2.host)
    try:
        task = ray_driver.ask("submit", node=node_id)
        assert ray_driver.ask("wait", task=task, seconds=3) == {"done": False}
    finally:
        net.heal(n2.host)
    assert ray_driver.ask("wait", task=task, seconds=30) == {"done": True, "ip": n2.host.address}
    # Three seconds is well within Ray's health checks: n2 was never declared dead.
    assert alive(ray_driver).get(n2.host.address) == node_id
    assert [str(c) for c in escapes(net, ray_cluster.pids())] == []


def test_a_killed_node_is_reported_dead_then_rejoins_when_restarted(ray_cluster, ray_driver):
    n4 = ray_cluster.nodes[3]
    old_id = until(lambda: alive(ray_driver).get(n4.host.address), 30, "n4 alive")
    names = {open(f"/proc/{p}/comm").read().strip() for p in n4.pids()}
    assert "raylet" in names and len(names) >= 3, names  # ray start, raylet, its agents

    killed_at = time.monotonic()
    victims = ray_cluster.kill(n4)
    print(f"kill -9 of {len(victims)} processes took {time.monotonic() - killed_at:.1f} s")
    assert victims and not victims & set(_proc_table())  # all dead (zombies at most)
    until(lambda: not any(n["id"] == old_id and n["alive"] for n in ray_driver.ask("nodes")), 60,
          "Ray to report the killed node dead")
    print(f"node death reported {time.monotonic() - killed_at:.1f} s after SIGKILL")

    ray_cluster.restart(n4)
    new_id = until(lambda: alive(ray_driver).get(n4.host.address), 30, "the restarted n4 alive")
    assert new_id != old_id
    assert run_on(ray_driver, new_id, 60) == {"done": True, "ip": n4.host.address}


@pytest.mark.slow
def test_a_driver_without_the_clusters_token_is_refused(ray_cluster):
    client = ray_cluster.network.hosts[4]
    code = "import os, ray; ray.init(_node_ip_address=os.environ['SHOAL_TEST_NODE_IP']); print('joined')"
    env = dict(ray_cluster.environ(), RAY_ADDRESS=ray_cluster.address, SHOAL_TEST_NODE_IP=client.address,
               RAY_AUTH_TOKEN="0" * 64)
    done = subprocess.run(["ip", "netns", "exec", client.name, sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "joined" not in done.stdout
    assert "InvalidAuthToken" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_a_long_partition_gets_the_node_declared_dead_for_good(ray_cluster, ray_driver):
    """Ray's GCS checks each node every second here (see ``ray_cluster``); a check
    gets 10 s to be answered, and a node missing 5 in a row is dead: ~55 s."""
    net, n3 = ray_cluster.network, ray_cluster.nodes[2]
    old_id = until(lambda: alive(ray_driver).get(n3.host.address), 30, "n3 alive")
    net.cut(n3.host)
    cut_at = time.monotonic()
    try:
        until(lambda: n3.host.address not in alive(ray_driver), 120, "Ray to declare the cut-off node dead", step=1)
        print(f"partitioned node declared dead after {time.monotonic() - cut_at:.0f} s")
    finally:
        net.heal(n3.host)
    # Healed, the node learns it was declared dead and its raylet ends: it stays out.
    assert n3.proc.wait(timeout=60) != 0
    ray_cluster.restart(n3)
    new_id = until(lambda: alive(ray_driver).get(n3.host.address), 30, "the restarted n3 alive")
    assert new_id != old_id
    assert run_on(ray_driver, new_id, 60) == {"done": True, "ip": n3.host.address}
