"""Prometheus metrics: what an operator watches (docs/observability.md lists them).

Two kinds of figures, kept apart because they live in different places:

- **Requests**: counts and latencies by method, route and status, counted by
  each HTTP process in its own registry (``Metrics``). With ``service.workers >
  1`` the control process answers every scrape (a worker forwards it) and adds
  its workers' figures to its own (``merge``; ``gateway.scrape`` fetches them),
  so a scrape sees every request whichever process served it.
- **The cluster's state**, read at each scrape from the shards and the Raft
  (``gateway.scrape``) and turned into gauges here (``cluster_families``, pure).

``RequestHistory`` keeps the request rate and latency of the last minutes, for
the dashboard's charts (``GET /metrics/history``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric

from cluster.replicas import ReplicaState

if TYPE_CHECKING:
    from cluster.metadata import RaftStatus
    from cluster.topology import Transfer
    from shard.types import ShardInfo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REPLICA_STATES = tuple(s.value for s in ReplicaState)
RAFT_ROLES = ("leader", "follower", "candidate")

# One process's request figures as plain data (what a worker sends the control
# process): [[family, type, help, [[sample, labels, value], ...]], ...].
Part = list


class Metrics:
    """This process's request counts and latencies."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shoal_rest_requests", "REST requests served", ["method", "endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "shoal_rest_request_seconds", "REST request latency", ["method", "endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._series: dict[tuple[str, str, int], tuple] = {}  # (method, endpoint, status): children

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        key = (method, endpoint, status)
        series = self._series.get(key)
        if series is None:  # looking labels up costs more than the update itself
            series = self._series[key] = (
                self.requests.labels(method, endpoint, str(status)),
                self.latency.labels(method, endpoint),
            )
        series[0].inc()
        series[1].observe(seconds)

    def part(self) -> Part:
        """The figures as plain data. ``_created`` timestamps are left out: they
        cannot be summed over processes."""
        return [[f.name, f.type, f.documentation,
                 [[s.name, s.labels, s.value] for s in f.samples if not s.name.endswith("_created")]]
                for f in self.registry.collect()]


def merge(parts: Iterable[Part]) -> list[Metric]:
    """The sum of several processes' figures, sample by sample (same name and labels)."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple, float]] = {}
    for part in parts:
        for name, typ, doc, samples in part:
            if name not in families:
                families[name], sums[name] = Metric(name, doc, typ), {}
            acc = sums[name]
            for sample, labels, value in samples:
                key = (sample, tuple(labels.items()))
                acc[key] = acc.get(key, 0.0) + value
    for name, family in families.items():
        for (sample, labels), value in sums[name].items():
            family.add_sample(sample, dict(labels), value)
    return list(families.values())


def as_part(families: Iterable[Metric]) -> Part:
    return [[f.name, f.type, f.documentation, [[s.name, s.labels, s.value] for s in f.samples]] for f in families]


class _Families:
    """What ``generate_latest`` needs of a registry."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def render(families: list[Metric]) -> bytes:
    return generate_latest(_Families(families))  # type: ignore[arg-type]


# ------------------------------------------------------------- cluster state


@dataclass
class ReplicaFigures:
    """One shard replica at one scrape: where it is, its state in the placement,
    and its ``info()`` (None: it did not answer in time)."""

    collection: str
    shard: int
    replica: str
    peer: int
    state: str
    info: ShardInfo | None


@dataclass
class ClusterFigures:
    points: dict[str, int] = field(default_factory=dict)  # running collection -> points (one replica per shard)
    unavailable: list[str] = field(default_factory=list)  # collections that could not be started
    replicas: list[ReplicaFigures] = field(default_factory=list)
    transfers: list[tuple[str, Transfer, float | None]] = field(default_factory=list)  # (collection, transfer, progress)
    raft: RaftStatus | None = None
    http_processes: int = 1


def _gauge(name: str, doc: str, rows: Iterable[tuple[dict[str, str], float]]) -> Metric:
    family = Metric(name, doc, "gauge")
    for labels, value in rows:
        family.add_sample(name, labels, value)
    return family


def cluster_families(fig: ClusterFigures) -> list[Metric]:
    """Gauges of the cluster's state as one scrape saw it."""

    def where(r: ReplicaFigures) -> dict[str, str]:
        return {"collection": r.collection, "shard": str(r.shard), "replica": r.replica, "peer": str(r.peer)}

    answered = [r for r in fig.replicas if r.info is not None]
    out = [
        _gauge("shoal_collections", "Collections, those that could not be started included",
               [({}, len(fig.points) + len(fig.unavailable))]),
        _gauge("shoal_collection_points", "Points per collection (each shard counted once)",
               [({"collection": c}, n) for c, n in fig.points.items()]),
        _gauge("shoal_collection_unavailable", "1 for a collection whose shards could not be started",
               [({"collection": c}, 1) for c in fig.unavailable]),
        _gauge("shoal_shard_up", "1 if the shard replica answered this scrape, else 0",
               [(where(r), int(r.info is not None)) for r in fig.replicas]),
        _gauge("shoal_shard_points", "Points held by the shard replica",
               [(where(r), r.info.points_count) for r in answered]),
        _gauge("shoal_shard_vectors", "Vectors held by the shard replica",
               [(where(r), r.info.vectors_count) for r in answered]),
        _gauge("shoal_shard_pending_index", "Vectors of the shard replica not yet in their HNSW graph",
               [(where(r), r.info.pending_index) for r in answered]),
        _gauge("shoal_shard_segments", "Segments of the shard replica",
               [(where(r), r.info.segments_count) for r in answered]),
        _gauge("shoal_wal_bytes", "Bytes of the shard replica's write-ahead log on disk",
               [(where(r), r.info.wal_bytes) for r in answered]),
        _gauge("shoal_replica_state", "1 for the replica's state in the placement, 0 for the others",
               [({**where(r), "state": s}, int(r.state == s)) for r in fig.replicas for s in REPLICA_STATES]),
        _gauge("shoal_transfer_progress",
               "A shard transfer in progress: the target's points over the source's (a full copy lands at once)",
               [({"collection": c, "shard": str(t.shard_id), "from": str(t.from_peer), "to": str(t.to_peer),
                  "sync": str(t.sync).lower()}, p if p is not None else 0.0) for c, t, p in fig.transfers]),
        _gauge("shoal_http_processes", "HTTP processes whose request figures this scrape sums",
               [({}, fig.http_processes)]),
    ]
    raft = fig.raft
    if raft is not None:
        out += [
            _gauge("shoal_raft_role", "1 for this gateway's role in the metadata Raft, 0 for the others",
                   [({"role": role}, int(raft.role == role)) for role in RAFT_ROLES]),
            _gauge("shoal_raft_term", "The metadata Raft's current term", [({}, raft.term)]),
            _gauge("shoal_raft_commit_index", "The last metadata Raft log index known committed",
                   [({}, raft.commit)]),
            _gauge("shoal_raft_applied_index", "The last metadata Raft log index applied here",
                   [({}, raft.applied)]),
            _gauge("shoal_raft_peers", "Members of the metadata Raft, this gateway included",
                   [({}, 1 + len(raft.partners))]),
            _gauge("shoal_raft_unreachable_peers", "Raft members this gateway cannot reach now",
                   [({}, len(raft.unreachable))]),
            _gauge("shoal_raft_leader_known", "1 if this gateway knows a Raft leader", [({}, int(bool(raft.leader)))]),
        ]
    return out


# -------------------------------------------------------------------- history


@dataclass
class Totals:
    """Every process's request figures added up, at one moment."""

    time: float
    requests: float
    errors: float  # answered 5xx
    seconds: float  # latency sum
    buckets: list[tuple[float, float]]  # (le, cumulative count), le ascending, +Inf last


def totals(families: Iterable[Metric], now: float) -> Totals:
    requests = errors = seconds = 0.0
    buckets: dict[float, float] = {}
    for family in families:
        for s in family.samples:
            if s.name == "shoal_rest_requests_total":
                requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    errors += s.value
            elif s.name == "shoal_rest_request_seconds_sum":
                seconds += s.value
            elif s.name == "shoal_rest_request_seconds_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return Totals(now, requests, errors, seconds, sorted(buckets.items()))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative ``buckets``: linear within
    the bucket that holds the rank; the highest finite bound if it is in +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            width = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / width if width > 0 else 1.0)
        lower_le, lower_count = le, count
    return lower_le


class RequestHistory:
    """Request rate and latency over the last ``size`` periods: the difference
    between successive ``Totals`` (a process that ended takes its counts with it:
    a difference below zero counts as zero)."""

    def __init__(self, period: float, size: int):
        self.period = period
        self._totals: collections.deque[Totals] = collections.deque(maxlen=size + 1)

    def add(self, sample: Totals) -> None:
        self._totals.append(sample)

    def points(self) -> list[dict[str, Any]]:
        out = []
        samples = list(self._totals)
        for before, after in zip(samples, samples[1:]):
            span = max(after.time - before.time, 1e-9)
            count = max(after.requests - before.requests, 0.0)
            earlier = dict(before.buckets)
            delta = [(le, max(c - earlier.get(le, 0.0), 0.0)) for le, c in after.buckets]
            p95 = quantile(0.95, delta) if count > 0 else None
            out.append({
                "time": after.time,
                "requests_per_s": count / span,
                "errors_per_s": max(after.errors - before.errors, 0.0) / span,
                "latency_mean_ms": (max(after.seconds - before.seconds, 0.0) / count * 1000) if count > 0 else None,
                "latency_p95_ms": p95 * 1000 if p95 is not None else None,
            })
        return out
