"""Raft leader failover: how long after the leader's gateway is killed a metadata change
succeeds through another gateway.

One run builds two "machines" (``tests.cluster``: network namespaces on a bridge, one
``ray start`` node each): a Ray head with one CPU, which hosts the shards, and a client
host whose Ray node has no CPU, where three gateways run, peers of one metadata Raft
(each its own process, port, storage and Raft port, authenticated with a secret). The
client (this process) runs in the root namespace and reaches them over the run's bridge;
nothing leaves the network (checked, and written to the JSON).

1. Reference: ``--changes`` alias changes (``POST /collections/aliases``, a metadata
   change: forwarded to the leader, acknowledged once committed) through a follower with
   the leader alive; their latency.
2. ``--rounds`` failovers: the gateways' agreed leader is killed (kill -9); from that
   moment the same change is sent through the two others in turn (each attempt bounded
   by ``--attempt-timeout``) until one is acknowledged: that time is the failover. Also
   the time until the two agree on a new leader (``GET /cluster``). Then the killed
   gateway is started again on its storage and must list every alias made meanwhile
   before the next round.

    python -m bench.raft_failover          # as root; about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import sys
import time

import orjson

from bench import machine, timing
from bench.remote_search import finish, network_only, run_warnings
from bench.shoal_side import RestClient
from cluster.metadata import RaftTimings
from tests.cluster import gateways
from tests.cluster.connections import escapes
from tests.cluster.netns import missing
from tests.cluster.raynodes import FAST_HEALTH_CHECKS, running, until

TARGET_S = 5.0  # a metadata change succeeds <= 5 s after the leader's gateway is killed
PORTS = [6333, 6343, 6353]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.raft_failover", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="leader kills (default: %(default)s)")
    p.add_argument("--changes", type=int, default=50, help="alias changes of the reference (default: %(default)s)")
    p.add_argument("--attempt-timeout", type=float, default=2.0,
                   help="seconds one attempt of a change may take during a failover (default: %(default)s)")
    p.add_argument("--out", default=os.path.join("bench", "results", "raft_failover.json"),
                   help="JSON output (default: %(default)s)")
    return p.parse_args(argv)


def _alias(client: RestClient, alias: str) -> bool:
    body = orjson.dumps({"actions": [{"create_alias": {"collection_name": "failover", "alias_name": alias}}]})
    try:
        status, _ = client.request("POST", "/collections/aliases", body)
    except OSError:
        return False
    return status == 200


def _leader(gws: list[gateways.Gateway]) -> gateways.Gateway | None:
    """The gateway that every live one names as leader, or None."""
    try:
        views = [RestClient(g.url, timeout_s=2).ok("GET", "/cluster")["result"] for g in gws]
    except (OSError, RuntimeError):
        return None
    leaders = {v["raft_info"]["leader"] for v in views}
    if len(leaders) != 1 or None in leaders:
        return None
    leader = leaders.pop()
    return next((g for g, v in zip(gws, views) if v["peer_id"] == leader), None)


def _round(n: int, gws: list[gateways.Gateway], cluster, secret: str, args) -> dict:
    leader = until(lambda: _leader(gws), 30, "the gateways to agree on a leader")
    others = [g for g in gws if g is not leader]
    clients = [RestClient(g.url, timeout_s=args.attempt_timeout) for g in others]
    os.kill(leader.proc.pid, signal.SIGKILL)
    killed = time.perf_counter()
    attempts, turn, changed = 0, 0, None
    while changed is None and time.perf_counter() - killed < 60:
        attempts += 1
        client = clients[turn % len(clients)]
        if _alias(client, f"round-{n}"):
            changed = time.perf_counter() - killed
        else:
            client.close()
            turn += 1
    elected = None
    with contextlib.suppress(TimeoutError):
        until(lambda: _leader(others), 30, "a new leader", step=0.05)
        elected = time.perf_counter() - killed
    for c in clients:
        c.close()
    leader.proc.wait(30)
    host = leader.host
    restarted = gateways.launch(cluster, host, leader.port, cluster.network.scratch / f"gateway-{leader.port}", secret,
                                peers=[f"{host.address}:{g.port + 2}" for g in others]).wait_ready()
    gws[gws.index(leader)] = restarted
    check = RestClient(restarted.url)
    try:
        until(lambda: f"round-{n}" in {a["alias_name"] for a in check.ok("GET", "/aliases")["result"]["aliases"]},
              30, "the restarted gateway to catch up")
    finally:
        check.close()
    return {"change_s": changed, "agreed_leader_s": elected, "attempts": attempts}


def _run(args) -> dict:
    secret = secrets.token_hex(32)
    with running([1, 0], env=FAST_HEALTH_CHECKS) as cluster:
        network = cluster.network
        host = network.hosts[1]
        print(f"network {network.subnet}: Ray head {network.hosts[0].address} (1 CPU), three gateways on "
              f"{host.address} (no CPU)", flush=True)
        gws = gateways.start_several(cluster, host, PORTS, network.scratch, secret)
        try:
            out: dict = {"cpu_probe_start": timing.cpu_probe()}
            with network_only(network), machine.LoadMeter() as meter:
                leader = until(lambda: _leader(gws), 30, "the gateways to agree on a leader")
                follower = RestClient(next(g for g in gws if g is not leader).url)
                follower.ok("PUT", "/collections/failover", orjson.dumps({"vectors": {"size": 4, "distance": "Dot"}}))
                latency = []
                for i in range(args.changes):
                    begin = time.perf_counter()
                    if not _alias(follower, f"reference-{i}"):
                        raise RuntimeError("an alias change failed with the leader alive")
                    latency.append(time.perf_counter() - begin)
                follower.close()
                out["reference"] = {"changes": args.changes, **timing.percentiles_ms(latency)}
                print(f"  reference: alias change through a follower, leader alive: p50 "
                      f"{out['reference']['p50_ms']:.1f} ms", flush=True)
                out["rounds"] = []
                for n in range(args.rounds):
                    r = _round(n, gws, cluster, secret, args)
                    out["rounds"].append(r)
                    print(f"  round {n + 1}: change acknowledged {r['change_s']:.2f} s after the kill "
                          f"({r['attempts']} attempts), new leader agreed by {r['agreed_leader_s']:.2f} s", flush=True)
                out["escaped_connections"] = [str(c) for c in escapes(network, cluster.pids() | {os.getpid()})]
            out["machine_load"] = meter.result
            out["cpu_probe_end"] = timing.cpu_probe()
            return out
        except BaseException:
            for g in gws:
                if g.log.exists():
                    print(f"--- log of {g.url} ---\n{g.log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            raise
        finally:
            for g in gws:
                with contextlib.suppress(Exception):
                    g.stop()


def render(res: dict) -> str:
    changes = [r["change_s"] for r in res["rounds"] if r["change_s"] is not None]
    timings = RaftTimings()
    low, high = timings.election_timeout
    lines = [f"{'measure':<52} | {'figure':>8}", "-" * 52 + "-+-" + "-" * 8,
             f"{'metadata change, leader alive (reference), p50':<52} | {res['reference']['p50_ms']:>6.1f}ms",
             f"{'metadata change after the leader is killed, median':<52} | {statistics.median(changes):>7.2f}s",
             f"{'  fastest / slowest of ' + str(len(res['rounds'])) + ' rounds':<52} | "
             f"{min(changes):.2f}-{max(changes):.2f}s",
             f"Raft election timeout (cluster.metadata.RaftTimings): {low:g}-{high:g} s; "
             f"failover = kill -9 of the leader's gateway -> an alias change acknowledged through another gateway"]
    return "\n".join(lines)


def targets(res: dict) -> list[dict]:
    changes = [r["change_s"] for r in res["rounds"]]
    worst = max((c for c in changes if c is not None), default=None)
    ok = worst is not None and None not in changes and worst <= TARGET_S
    return [{"target": f"a metadata change succeeds <= {TARGET_S:g} s after the leader's gateway is killed "
                       "(every round)", "result": "PASS" if ok else "FAIL",
             "value": f"{worst:.2f} s at worst" if worst is not None else "never"}]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (why := missing()) is not None:
        raise SystemExit(f"cannot build the test network: {why}")
    if min(args.rounds, args.changes) < 1:
        raise SystemExit("--rounds and --changes must be positive")
    res = _run(args)
    print()
    print(render(res))
    checked = targets(res)
    finish(args.out, [f"{t['result']}  {t['target']}: {t['value']}" for t in checked], run_warnings(res),
           {"args": vars(args), "results": res, "targets": checked})
    return 0 if all(t["result"] == "PASS" for t in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
