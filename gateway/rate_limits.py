"""Strict mode's read and write rate limits (``read_rate_limit``,
``write_rate_limit``: operations a minute), as Qdrant 1.15 applies them once a
request has passed ``gateway.strict``'s checks.

Qdrant keeps a RateLimiter per shard replica (common/rate_limiting.rs): a token
bucket holding a minute's worth of tokens, full at the start and again after
every change of the strict mode config, refilled continuously. Shoal keeps one
bucket per collection, reads and writes apart, in each gateway process
(``RateLimits``); with one shard that is Qdrant's single-node behaviour. An
operation costs what Qdrant charges where the gateway can tell (``read_cost``,
``write_parts``); a refused request takes no tokens and changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.errors import RateLimited
from gateway.strict import conditions_count


def _query_cost(query: Any) -> int:
    """QueryEnum::search_cost: one per vector the query compares (a dense example
    costs 1); every other query kind reads like a scroll (1)."""
    if isinstance(query, dict):
        if "recommend" in query:
            rec = query["recommend"]
            if rec.get("strategy") in ("best_score", "sum_scores"):
                return max(1, len(rec.get("positive") or []) + len(rec.get("negative") or []))
        elif "discover" in query:
            return 1 + 2 * len(query["discover"].get("context") or [])
        elif "context" in query:
            return max(1, 2 * len(query["context"] or []))
    return 1


def _filter_cost(body: dict) -> int:
    return conditions_count(body["filter"]) if body.get("filter") is not None else 0


def _search_cost(body: dict) -> int:
    """CoreSearchRequest::search_rate_cost of a legacy search, recommend or discover."""
    if body.get("strategy") in ("best_score", "sum_scores"):
        base = max(1, len(body.get("positive") or []) + len(body.get("negative") or []))
    elif "context" in body or "target" in body:
        base = (1 if body.get("target") is not None else 0) + 2 * len(body.get("context") or [])
    else:
        base = 1
    return max(1, base) + _filter_cost(body)


def _query_tree_cost(body: dict) -> int:
    return (_query_cost(body.get("query")) + _filter_cost(body)
            + sum(_query_tree_cost(p) for p in body.get("prefetch") or []))


def read_cost(kind: str, body: dict[str, Any]) -> int:
    """Tokens a read takes: per search its query's cost plus its filter's conditions
    (operation_rate_cost.rs); a query, the same summed over its prefetches; a
    scroll, count, facet or matrix 1 plus the conditions; a retrieve, one per id."""
    if kind == "retrieve":
        return max(1, len(body["ids"]))
    if kind in ("search_batch", "recommend_batch", "discover_batch"):
        return sum(_search_cost(s) for s in body["searches"])
    if kind in ("search", "recommend", "discover", "search_groups", "recommend_groups"):
        return _search_cost(body)
    if kind == "query_batch":
        return sum(_query_tree_cost(s) for s in body["searches"])
    if kind in ("query", "query_groups"):
        return _query_tree_cost(body)
    return 1 + _filter_cost(body)


def write_parts(kind: str, body: dict[str, Any]) -> list[int | dict[str, Any]]:
    """The cost of each operation of a write: the points it names (Qdrant: at least
    1, its cardinality estimate), or its filter, whose matching points the caller
    counts (Qdrant estimates them)."""
    if kind == "batch":
        parts: list[int | dict[str, Any]] = []
        for operation in body["operations"]:
            ((op, data),) = operation.items()
            parts += write_parts(op, data)
        return parts
    if kind == "upsert":
        return [max(1, len(body["batch"]["ids"]) if "batch" in body else len(body["points"]))]
    if kind == "update_vectors":
        return [max(1, len(body["points"]))]
    if body.get("points") is not None:
        return [max(1, len(body["points"]))]
    if body.get("filter") is not None:
        return [body["filter"]]
    return [1]  # a payload index change


@dataclass
class TokenBucket:
    """Qdrant's RateLimiter (common/rate_limiting.rs): ``per_minute`` tokens, full
    at the start, refilled at per_minute / 60 a second. Times are monotonic seconds."""

    per_minute: int
    now: float
    tokens: float = -1.0

    def __post_init__(self):
        if self.tokens < 0:
            self.tokens = float(self.per_minute)

    def take(self, costs: list[int], now: float, kind: str) -> None:
        """Take ``sum(costs)`` tokens, or raise RateLimited ("Read"/"Write" ``kind``)
        and take none. An operation that costs more than the whole bucket can
        never pass: Qdrant says so without a Retry-After."""
        if any(cost > self.per_minute for cost in costs):
            raise RateLimited(errors.rate_limit_over_capacity(kind))
        rate = self.per_minute / 60.0
        self.tokens = min(float(self.per_minute), self.tokens + rate * max(0.0, now - self.now))
        self.now = now
        cost = sum(costs)
        if cost > self.per_minute:
            raise RateLimited(errors.rate_limit_over_capacity(kind))
        if self.tokens < cost:
            wait = math.ceil((cost - self.tokens) / rate)
            raise RateLimited(errors.rate_limit_retry(kind, cost, self.tokens, wait), wait)
        self.tokens -= cost


class RateLimits:
    """The token buckets of one gateway process, by collection incarnation and
    "read"/"write". A bucket starts full, and again whenever the strict mode
    config changes (as Qdrant replaces a shard's limiters on every config update)."""

    def __init__(self):
        self._buckets: dict[tuple[str, str], tuple[dict, TokenBucket]] = {}

    def take(self, incarnation: str, strict: dict[str, Any], write: bool, costs: list[int], now: float) -> None:
        per_minute = strict.get("write_rate_limit" if write else "read_rate_limit")
        if per_minute is None:
            return
        key = (incarnation, "write" if write else "read")
        known = self._buckets.get(key)
        if known is None or known[0] != strict:
            known = (dict(strict), TokenBucket(per_minute, now))
            self._buckets[key] = known
        known[1].take(costs, now, "Write" if write else "Read")
