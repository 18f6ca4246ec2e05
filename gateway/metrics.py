"""Prometheus metrics: requests and latencies per endpoint, points per collection."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shoal_rest_requests", "REST requests served", ["method", "endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "shoal_rest_request_seconds",
            "REST request latency",
            ["method", "endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.points = Gauge("shoal_collection_points", "Points per collection", ["collection"], registry=self.registry)
        self.collections = Gauge("shoal_collections", "Number of collections", registry=self.registry)
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

    def set_points(self, counts: dict[str, int]) -> None:
        self.points.clear()
        for name, count in counts.items():
            self.points.labels(name).set(count)
        self.collections.set(len(counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)
