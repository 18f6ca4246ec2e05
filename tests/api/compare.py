"""Compare Shoal's answers with the oracle's (``QdrantClient(":memory:")``).

Rules, and why they are this loose and no looser:
- Scores: Shoal computes in float32, the local mode in float64, so two scores agree when
  ``|a - b| <= 1e-4 * max(1, |a|, |b|)``. Scores are compared rank by rank, so a wrong
  order of different scores fails.
- Ids: every id Shoal returns must be in the oracle's answer with the same score. Points
  whose scores tie may come in either order; and when the answer is cut at ``limit``,
  the last tied scores may name different points (either is a correct top-k).
- Payloads: equal as JSON values (``True`` is not ``1``).
- Vectors: element-wise within 1e-5 (relative above 1).
Failures print a side-by-side table of both answers, so the bug is readable in CI logs.

Works with any qdrant-client >= 1.10 (pydantic 2 models): tests/latest imports it too.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

SCORE_RTOL = 1e-4
VECTOR_TOL = 1e-5
MAX_PROBLEMS = 25


def plain(obj: Any) -> Any:
    """A JSON-shaped copy of a client answer (pydantic models, tuples, numpy values)."""
    if hasattr(obj, "model_dump"):
        return plain(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "value") and obj.__class__.__module__.startswith("qdrant_client"):
        return obj.value
    return obj


def norm_id(point_id: Any) -> Any:
    """Ids compare as int, or as the canonical lower-case UUID string."""
    if isinstance(point_id, str):
        return point_id.lower()
    return point_id


def _id_key(point_id: Any):
    return (0, point_id, "") if isinstance(point_id, int) else (1, 0, str(point_id))


def scores_close(a: float | None, b: float | None, rtol: float = SCORE_RTOL) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


def diff_values(a: Any, b: Any, path: str, out: list[str], tol: float | None) -> None:
    """Append a line to ``out`` for every place where ``a`` and ``b`` differ.

    ``tol`` None compares floats exactly; otherwise with a tolerance relative above 1.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        if type(a) is not type(b) or a != b:
            out.append(f"{path or '.'}: {a!r} != {b!r}")
        return
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if tol is None:
            if a != b:
                out.append(f"{path or '.'}: {a!r} != {b!r}")
        elif not (math.isclose(a, b, abs_tol=tol) or abs(a - b) <= tol * max(abs(a), abs(b))):
            out.append(f"{path or '.'}: {a!r} != {b!r} (tolerance {tol})")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                out.append(f"{path}.{key}: missing on Shoal (oracle has {b[key]!r})")
            elif key not in b:
                out.append(f"{path}.{key}: extra on Shoal ({a[key]!r})")
            else:
                diff_values(a[key], b[key], f"{path}.{key}", out, tol)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path or '.'}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            diff_values(x, y, f"{path}[{i}]", out, tol)
        return
    if a != b:
        out.append(f"{path or '.'}: {a!r} != {b!r}")


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(shoal: list[dict], memory: list[dict], rows: int = 30) -> str:
    lines = [f"{'rank':>4}  {'Shoal id':>38} {'score':>12}   {':memory: id':>38} {'score':>12}"]
    for i in range(min(rows, max(len(shoal), len(memory)))):
        left = shoal[i] if i < len(shoal) else None
        right = memory[i] if i < len(memory) else None
        mark = " " if (left and right and norm_id(left["id"]) == norm_id(right["id"])) else "*"
        ls = f"{_short(left['id'], 38):>38} {_fmt_score(left.get('score')):>12}" if left else " " * 51
        rs = f"{_short(right['id'], 38):>38} {_fmt_score(right.get('score')):>12}" if right else ""
        lines.append(f"{i:>4}{mark} {ls}   {rs}")
    return "\n".join(lines)


def _fmt_score(score: Any) -> str:
    return "-" if score is None else f"{score:.6g}"


def _raise(what: str, problems: list[str], shoal: list[dict], memory: list[dict]) -> None:
    shown = problems[:MAX_PROBLEMS]
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    body = "\n".join(f"  - {p}" for p in shown)
    raise AssertionError(
        f"{what}: Shoal differs from :memory:\n{body}{more}\n"
        f"(* marks ranks whose ids differ)\n{_table(shoal, memory)}"
    )


def _compare_point_fields(x: dict, y: dict, label: str, problems: list[str]) -> None:
    diff_values(x.get("payload"), y.get("payload"), f"{label}.payload", problems, None)
    diff_values(x.get("vector"), y.get("vector"), f"{label}.vector", problems, VECTOR_TOL)
    if "order_value" in x or "order_value" in y:
        diff_values(x.get("order_value"), y.get("order_value"), f"{label}.order_value",
                    problems, SCORE_RTOL)


def assert_scored(shoal: Iterable, memory: Iterable, *, limit: int | None = None,
                  what: str = "scored points") -> None:
    """Search-like answers (lists of ScoredPoint) agree; see the module docstring."""
    a = [plain(p) for p in shoal]
    b = [plain(p) for p in memory]
    problems: list[str] = []
    if len(a) != len(b):
        problems.append(f"{len(a)} points from Shoal, {len(b)} from :memory:")
    for rank, (x, y) in enumerate(zip(a, b)):
        if not scores_close(x["score"], y["score"]):
            problems.append(f"rank {rank}: score {x['score']!r} != {y['score']!r}")
    oracle = {norm_id(p["id"]): p for p in b}
    cut = limit is None or len(b) >= limit
    last = b[-1]["score"] if b else None
    seen = set()
    for rank, x in enumerate(a):
        pid = norm_id(x["id"])
        if pid in seen:
            problems.append(f"rank {rank}: id {pid!r} returned twice")
        seen.add(pid)
        y = oracle.get(pid)
        if y is None:
            if not (cut and last is not None and scores_close(x["score"], last)):
                problems.append(f"rank {rank}: id {pid!r} (score {x['score']!r}) "
                                f"is not in the :memory: answer")
            continue
        if not scores_close(x["score"], y["score"]):
            problems.append(f"id {pid!r}: score {x['score']!r} != {y['score']!r}")
        _compare_point_fields(x, y, f"id {pid!r}", problems)
    if problems:
        _raise(what, problems, a, b)


def _sort_within_ties(points: list[dict]) -> list[dict]:
    """Order runs of equal ``order_value`` by id: Qdrant leaves their order open."""
    keyed = []
    group = -1
    previous = object()
    for p in points:
        if p.get("order_value") != previous:
            group += 1
            previous = p.get("order_value")
        keyed.append((group, _id_key(norm_id(p["id"])), p))
    return [p for _, _, p in sorted(keyed, key=lambda t: (t[0], t[1]))]


def assert_records(shoal: Iterable, memory: Iterable, *, ordered: bool = False,
                   limit: int | None = None, what: str = "records") -> None:
    """Retrieve/scroll answers (lists of Record) agree. Qdrant does not promise an order
    for retrieve, so by default both sides are sorted by id first. Ordered answers with
    ``order_value`` (scroll with order_by) may order equal values either way, and when
    cut at ``limit`` the last run of equal values may hold different points."""
    a = [plain(p) for p in shoal]
    b = [plain(p) for p in memory]
    if not ordered:
        a.sort(key=lambda p: _id_key(norm_id(p["id"])))
        b.sort(key=lambda p: _id_key(norm_id(p["id"])))
    elif any(p.get("order_value") is not None for p in a + b):
        a, b = _sort_within_ties(a), _sort_within_ties(b)
        if limit is not None and len(a) == len(b) == limit and b:
            last = b[-1].get("order_value")
            tail_a = [p for p in a if p.get("order_value") == last]
            tail_b = [p for p in b if p.get("order_value") == last]
            if len(tail_a) == len(tail_b):
                a, b = a[: len(a) - len(tail_a)], b[: len(b) - len(tail_b)]
    problems: list[str] = []
    ids_a = [norm_id(p["id"]) for p in a]
    ids_b = [norm_id(p["id"]) for p in b]
    if ids_a != ids_b:
        missing = [i for i in ids_b if i not in set(ids_a)]
        extra = [i for i in ids_a if i not in set(ids_b)]
        problems.append(f"ids differ (order matters: {ordered}); missing on Shoal "
                        f"{missing[:10]}, extra on Shoal {extra[:10]}")
    oracle = {norm_id(p["id"]): p for p in b}
    for x in a:
        y = oracle.get(norm_id(x["id"]))
        if y is not None:
            _compare_point_fields(x, y, f"id {x['id']!r}", problems)
    if problems:
        _raise(what, problems, a, b)


def assert_same(shoal: Any, memory: Any, *, what: str = "answer", tol: float | None = SCORE_RTOL
                ) -> None:
    """Any other answer (counts, facets, config parts) agrees as JSON, floats within tol."""
    a, b = plain(shoal), plain(memory)
    problems: list[str] = []
    diff_values(a, b, "", problems, tol)
    if problems:
        body = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS])
        raise AssertionError(f"{what}: Shoal differs from :memory:\n{body}\n"
                             f"Shoal:    {_short(a, 400)}\n:memory: {_short(b, 400)}")


def assert_scroll(shoal: tuple, memory: tuple, *, what: str = "scroll") -> None:
    """A scroll page: records in order, and the same next_page_offset."""
    assert_records(shoal[0], memory[0], ordered=True, what=what)
    assert_same(norm_id(shoal[1]), norm_id(memory[1]), what=f"{what} next_page_offset")


def assert_groups(shoal: Any, memory: Any, *, what: str = "groups") -> None:
    """search_groups answers: same group ids in order (ties by score may swap), same hits."""
    a, b = shoal.groups, memory.groups
    problems: list[str] = []
    if len(a) != len(b):
        problems.append(f"{len(a)} groups from Shoal, {len(b)} from :memory:")
    for i, (ga, gb) in enumerate(zip(a, b)):
        sa = ga.hits[0].score if ga.hits else None
        sb = gb.hits[0].score if gb.hits else None
        if not scores_close(sa, sb):
            problems.append(f"group {i}: top score {sa} != {sb}")
    oracle = {plain(g.id): g for g in b}
    for g in a:
        other = oracle.get(plain(g.id))
        if other is None:
            problems.append(f"group {plain(g.id)!r} not in :memory: answer")
            continue
        try:
            assert_scored(g.hits, other.hits, what=f"{what} group {plain(g.id)!r}")
        except AssertionError as e:
            problems.append(str(e))
    if problems:
        raise AssertionError(f"{what}: Shoal differs from :memory:\n" + "\n".join(problems))


def both(shoal: Any, memory: Any, call: Callable[[Any], Any]) -> tuple[Any, Any]:
    """Run the same call on both clients."""
    return call(shoal), call(memory)


def both_raise(shoal: Any, memory: Any, call: Callable[[Any], Any], what: str = "") -> tuple:
    """The call must fail on both sides (the exception types differ: HTTP vs local)."""
    errors = []
    for name, client in (("Shoal", shoal), (":memory:", memory)):
        try:
            result = call(client)
        except Exception as e:  # noqa: BLE001 - any rejection counts, the type is side-specific
            errors.append(e)
        else:
            raise AssertionError(f"{what}: {name} accepted a call that both sides must "
                                 f"reject; it answered {_short(plain(result), 300)}")
    return tuple(errors)
