"""One Shoal server, one seeded collection, and the loop that sends generated
requests to it and judges each answer (``tests.fuzz.checks``).

A failure does not stop the run: it is recorded in a ``FailureLog`` (grouped,
keeping the smallest request of each group) and the test of the operation
fails at the end with all of them, so one run finds as many distinct failures
as it can. Hypothesis only generates here; nothing raises into it, so it does
not shrink (each shrink step would be a real request).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from hypothesis import HealthCheck, Phase, Verbosity, given, reject, seed, settings
from hypothesis import strategies as st

from tests.api.rawhttp import call
from tests.conftest import ShoalServer
from tests.fuzz import checks

SEED_COLLECTION = "fuzz_seed"
SEED_CONFIG = {"vectors": {"size": 2, "distance": "Cosine"}, "shard_number": 2}
SEED_POINTS = [
    {"id": 1, "vector": [1.0, 0.0], "payload": {"city": "Berlin", "count": 1, "price": 9.5}},
    {"id": 2, "vector": [0.0, 1.0], "payload": {"city": "London", "count": 2, "tags": ["a", "b"]}},
    {"id": 3, "vector": [0.6, 0.8], "payload": {"city": "Paris", "flag": True, "empty": None}},
    {"id": 4, "vector": [-1.0, 0.5], "payload": {"nested": {"k": [1, 2], "s": "x"}, "count": 4}},
    {"id": 5, "vector": [0.3, -0.7], "payload": {"geo": {"lon": 13.4, "lat": 52.5}, "price": -1.25}},
    {"id": 6, "vector": [2.0, 2.0], "payload": {}},
    {"id": 7, "vector": [-0.1, -0.9], "payload": {"city": ["Berlin", "Rome"], "dt": "2024-01-02T03:04:05Z"}},
    {"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "vector": [0.5, 0.5], "payload": {"uuid_point": True}},
]
# Each shard is a Ray actor process: generated creates may ask for this many at most.
MAX_SHARDS = 4
REQUEST_TIMEOUT = 15.0  # seconds; a request still unanswered then is a hang
# Operations that only read: a success of theirs is not followed by a check of the
# seeded collection (a rejection of any operation is).
READS = {
    "root", "healthz", "livez", "readyz", "metrics", "get_collections", "get_collection",
    "collection_exists", "get_collection_aliases", "get_collections_aliases", "get_point",
    "get_points", "scroll_points", "search_points", "search_batch_points", "search_point_groups",
    "recommend_points", "recommend_batch_points", "recommend_point_groups", "discover_points",
    "discover_batch_points", "count_points", "facet", "query_points", "query_batch_points",
    "query_points_groups", "search_matrix_pairs", "search_matrix_offsets",
    "cluster_status", "collection_cluster_info",
}


class HarnessError(RuntimeError):
    """The harness itself cannot go on (e.g. cannot restore the seeded collection)."""


# ---------------------------------------------------------------- operations


@dataclass(frozen=True)
class SpecOperation:
    """One operation of the spec, as written there."""

    path: str
    method: str  # upper case
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def id(self) -> str:
        return self.raw.get("operationId", self.label)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def parameters(self) -> list[dict[str, Any]]:
        return self.raw.get("parameters", [])

    @property
    def has_inputs_to_break(self) -> bool:
        """Whether negative generation has something to make invalid: a body or a
        query parameter (a path parameter is any string)."""
        return "requestBody" in self.raw or any(p.get("in") == "query" for p in self.parameters)


def spec_operations(spec: dict[str, Any]) -> list[SpecOperation]:
    methods = ("get", "put", "post", "patch", "delete")
    return [SpecOperation(path, method.upper(), raw)
            for path, item in spec["paths"].items() for method, raw in item.items() if method in methods]


# ------------------------------------------------------------------ failures


@dataclass
class Failure:
    kind: str
    operation: str
    mode: str
    status: int | None
    message: str
    method: str
    url: str
    body: str | None
    response: str
    server_log: str = ""
    count: int = 1

    @property
    def size(self) -> int:
        return len(self.url) + len(self.body or "")

    def describe(self) -> str:
        lines = [f"[{self.kind}] {self.operation} ({self.mode}, seen {self.count}x): {self.message}",
                 f"    {self.method} {self.url}"]
        if self.body is not None:
            lines.append(f"    body: {self.body[:1500]}")
        lines.append(f"    -> {self.status}: {self.response[:600]}")
        if self.server_log:
            lines.append("    server log:\n" + "\n".join("      " + line for line in self.server_log.splitlines()[-25:]))
        return "\n".join(lines)


def normalized(message: str) -> str:
    """A message with its numbers and quoted values blanked, so that failures
    that differ only by the generated data count as one."""
    message = re.sub(r"(['\"`]).*?\1", "<v>", message)
    return re.sub(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", "N", message)[:160]


@dataclass
class FailureLog:
    """Failures grouped by (operation, kind, status, normalized message); each
    group keeps its smallest request as the reproduction."""

    groups: dict[tuple, Failure] = field(default_factory=dict)

    def record(self, failure: Failure) -> None:
        key = (failure.operation, failure.kind, failure.status, normalized(failure.message))
        known = self.groups.get(key)
        if known is None:
            self.groups[key] = failure
            return
        failure.count = known.count + 1
        if failure.size < known.size:
            self.groups[key] = failure
        else:
            known.count += 1

    def of(self, operation: str, mode: str | None = None) -> list[Failure]:
        return [f for f in self.groups.values() if f.operation == operation and mode in (None, f.mode)]

    def distinct(self) -> dict[tuple, list[Failure]]:
        """The groups again, merged across operations: (kind, status, message) -> failures."""
        merged: dict[tuple, list[Failure]] = {}
        for failure in self.groups.values():
            merged.setdefault((failure.kind, failure.status, normalized(failure.message)), []).append(failure)
        return merged

    def to_json(self) -> list[dict[str, Any]]:
        return [failure.__dict__ for failure in self.groups.values()]


# -------------------------------------------------------------- the target


class Target:
    """A Shoal server with the seeded collection, restarted on fresh storage if
    a request kills or wedges it."""

    def __init__(self, base: Path):
        self.base = base
        self.server: ShoalServer | None = None
        self.expected: dict[Any, dict[str, Any]] = {}
        self.config: dict[str, Any] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        """Start a server on fresh storage (each start has a folder of its own, so
        the logs of a server that died are kept) and seed it."""
        folder = self.base / f"server-{self.restarts}"
        self.server = ShoalServer(storage=folder / "storage", log_dir=folder)
        self.server.start()
        self.config = None
        self.restore()

    def restart(self) -> None:
        self.server.kill()
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def responsive(self) -> bool:
        try:
            return call("GET", self.url + "/readyz", timeout=5)[0] == 200
        except OSError:
            return False

    def _stderr(self) -> Path:
        # ShoalServer writes its stderr to <log_dir>/server-<starts>.stderr.
        return self.server.log_dir / f"server-{self.server.starts}.stderr"

    def log_size(self) -> int:
        path = self._stderr()
        return path.stat().st_size if path.exists() else 0

    def log_since(self, offset: int) -> str:
        """What the server wrote to stderr after ``offset`` (its tracebacks)."""
        path = self._stderr()
        if not path.exists():
            return ""
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(20000).decode(errors="replace")

    # --------------------------------------------------------- seeded data

    def _collection(self, suffix: str = "") -> str:
        return f"{self.url}/collections/{SEED_COLLECTION}{suffix}"

    def read_state(self) -> dict[Any, dict[str, Any]] | None:
        """id -> {"vector", "payload"} of every seeded-collection point, or None
        if the collection cannot be read."""
        status, body = call("POST", self._collection("/points/scroll"),
                            {"limit": 100, "with_payload": True, "with_vector": True}, timeout=REQUEST_TIMEOUT)
        if status != 200:
            return None
        return {p["id"]: {"vector": p.get("vector"), "payload": p.get("payload")} for p in body["result"]["points"]}

    def tidy(self) -> None:
        """Drop every alias and every collection but the seeded one (made by
        successful generated requests)."""
        status, body = call("GET", self.url + "/aliases", timeout=REQUEST_TIMEOUT)
        if status == 200 and body["result"]["aliases"]:
            actions = [{"delete_alias": {"alias_name": a["alias_name"]}} for a in body["result"]["aliases"]]
            call("POST", self.url + "/collections/aliases", {"actions": actions}, timeout=REQUEST_TIMEOUT)
        status, body = call("GET", self.url + "/collections", timeout=REQUEST_TIMEOUT)
        if status == 200:
            for entry in body["result"]["collections"]:
                if entry["name"] != SEED_COLLECTION:
                    call("DELETE", f"{self.url}/collections/{quote(entry['name'], safe='')}", timeout=60)

    def restore(self) -> None:
        """Bring the seeded collection back to its seed: recreate it if its config
        changed or it is gone, else delete extra points and upsert the seed."""
        status, body = call("GET", self._collection(), timeout=REQUEST_TIMEOUT)
        config = body["result"]["config"] if status == 200 else None
        if config is None or config != self.config:
            call("DELETE", self._collection(), timeout=60)
            status, body = call("PUT", self._collection(), SEED_CONFIG, timeout=60)
            if status != 200:
                raise HarnessError(f"cannot create the seeded collection: {status} {body}")
            self.config = call("GET", self._collection(), timeout=REQUEST_TIMEOUT)[1]["result"]["config"]
        else:
            extra = [i for i in (self.read_state() or {}) if i not in {p["id"] for p in SEED_POINTS}]
            if extra:
                call("POST", self._collection("/points/delete?wait=true"), {"points": extra}, timeout=REQUEST_TIMEOUT)
        status, body = call("PUT", self._collection("/points?wait=true"), {"points": SEED_POINTS}, timeout=REQUEST_TIMEOUT)
        state = self.read_state()
        if status != 200 or state is None or set(state) != {p["id"] for p in SEED_POINTS}:
            raise HarnessError(f"cannot restore the seeded collection: {status} {body}")
        self.expected = state


# ---------------------------------------------------------------- the loop


def request_of(case, base_url: str) -> requests.PreparedRequest:
    """The exact request a generated case stands for."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    allowed = ("method", "url", "headers", "params", "cookies", "json", "data", "files", "auth")
    return requests.Request(**{k: v for k, v in kwargs.items() if k in allowed}).prepare()


def _text(body: Any) -> str | None:
    if body is None:
        return None
    return body.decode(errors="replace") if isinstance(body, bytes) else str(body)


class Fuzzer:
    """Sends generated cases of one operation at a time to ``target``."""

    def __init__(self, target: Target, log: FailureLog, components: dict[str, Any]):
        self.target = target
        self.log = log
        self.components = components
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only: never through a proxy
        self.sent = 0

    def run(self, operation: SpecOperation, mode: str, strategy, max_examples: int, salt: str = "") -> list[Failure]:
        """Send ``max_examples`` cases drawn from ``strategy`` (seeded by operation,
        mode and ``salt``, so a run is reproducible) and return the failures
        recorded for this operation and mode."""

        @settings(max_examples=max_examples, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
        @seed(zlib.crc32(f"{operation.label} {mode} {salt}".encode()))
        @given(case=strategy)
        def generated(case):
            self.send(case, operation, mode)

        generated()
        return self.log.of(operation.label, mode)

    def send(self, case, operation: SpecOperation, mode: str) -> None:
        reason = checks.unsafe_to_send(case.path_parameters or {}, case.body, MAX_SHARDS)
        if reason is not None:
            reject()
        target = self.target
        prepared = request_of(case, target.url)
        offset = target.log_size()
        self.sent += 1

        def record(kind: str, message: str, status: int | None = None, response: str = "") -> None:
            self.log.record(Failure(
                kind=kind, operation=operation.label, mode=mode, status=status, message=message,
                method=prepared.method, url=prepared.url.replace(target.url, ""),
                body=_text(prepared.body), response=response, server_log=target.log_since(offset)))

        try:
            answer = self.session.send(prepared, timeout=REQUEST_TIMEOUT)
        except requests.Timeout:
            record("hang", f"no answer within {REQUEST_TIMEOUT:.0f} s")
            self._recover()
            return
        except requests.ConnectionError as e:
            alive = target.server.alive()
            record("server died" if not alive else "connection failed", repr(e)[:300])
            self._recover()
            return

        status, content = answer.status_code, answer.content
        shown = content[:2000].decode(errors="replace")
        for problem in checks.response_problems(status, answer.headers.get("Content-Type"), content):
            kind = "server error" if status >= 500 else "error shape"
            record(kind, checks.error_text(content) if status >= 500 else problem, status, shown)
        if status < 400:
            for problem in checks.invalid_query_parameters(prepared.url, operation.parameters, self.components):
                record("invalid query accepted", problem, status, shown)
        if not target.server.alive():
            record("server died", "the server process exited", status, shown)
            self._recover()
            return
        if status < 400 and operation.id in READS:
            return
        state = target.read_state()
        changed = state is None or checks.state_differences(target.expected, state)
        if status >= 400 and changed:
            what = ["the seeded collection cannot be read"] if state is None else changed
            record("rejected request changed data", "; ".join(what)[:500], status, shown)
        if status < 400:
            target.tidy()
        if changed:
            target.restore()

    def _recover(self) -> None:
        """After a hang or a lost connection: restart the server if it is dead or
        wedged, and bring the seeded collection back either way."""
        target = self.target
        if not target.server.alive() or not target.responsive():
            target.restart()
            return
        target.tidy()
        target.restore()


def strategy_for(operation, mode: str, fixed_share: int = 9):
    """Cases of ``operation`` in ``mode``; ``fixed_share`` in 10 target the seeded
    collection, the rest any generated collection name."""
    from schemathesis.generation import GenerationMode

    generation_mode = GenerationMode(mode)
    free = operation.as_strategy(generation_mode=generation_mode)
    if "{collection_name}" not in operation.path:
        return free
    fixed = operation.as_strategy(generation_mode=generation_mode, path_parameters={"collection_name": SEED_COLLECTION})
    return st.integers(0, 9).flatmap(lambda i: fixed if i < fixed_share else free)


def report(failures: list[Failure]) -> str:
    return f"{len(failures)} distinct failure(s):\n\n" + "\n\n".join(f.describe() for f in failures)
