"""gateway.formula: random expression trees against a plain Python evaluator, hand-written
formulas against qdrant-client's local mode, and Qdrant's error texts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from gateway import formula
from gateway.errors import QdrantError, status_and_text
from shard.types import BadInput, ScoredPoint


def matches(condition, point) -> bool:
    """The caller's condition check; enough of Qdrant's for these tests."""
    if "must" in condition or not condition:
        return all(matches(c, point) for c in condition.get("must") or [])
    value = point.payload.get(condition["key"])
    if "match" in condition:
        return value == condition["match"]["value"]
    r = condition["range"]
    return isinstance(value, (int, float)) and all(
        op(value, r[k]) for k, op in (("gt", float.__gt__), ("gte", float.__ge__), ("lt", float.__lt__), ("lte", float.__le__)) if k in r
    )


def point(payload=None, scores=(), pid=1):
    return formula.Point(pid, payload or {}, list(scores), matches)


def score(expr, payload=None, scores=(), defaults=None):
    return formula.parse(expr, defaults).score(point(payload, scores))


# --------------------------------------------------------------- the naive evaluator


class NonFinite(Exception):
    pass


def f32(x):
    return float(np.float32(x))


def naive(e, payload, scores, defaults):
    """Qdrant's rules written out plainly (f64, checked operations raise NonFinite)."""
    if isinstance(e, (int, float)):
        return f32(e)
    if isinstance(e, str):
        if e.startswith("$score"):
            i = int(e[7:-1]) if e != "$score" else 0
            if i < len(scores) and scores[i] is not None:
                return scores[i]
            return float(defaults.get(e, 0.0))
        v = payload.get(e, defaults.get(e))
        if v is None:
            raise KeyError(e)
        return float(v)
    if "key" in e:
        return 1.0 if payload.get(e["key"]) == e["match"]["value"] else 0.0
    (op, arg), = e.items()
    ev = lambda x: naive(x, payload, scores, defaults)  # noqa: E731
    if op == "sum":
        return sum((ev(x) for x in arg), 0.0)
    if op == "mult":
        product = 1.0
        for x in arg:
            v = ev(x)
            if v == 0.0:
                return 0.0
            product *= v
        return product
    if op == "neg":
        return -ev(arg)
    if op == "abs":
        return abs(ev(arg))
    if op == "div":
        a = ev(arg["left"])
        if a == 0.0:
            return 0.0
        b = ev(arg["right"])
        if b == 0.0 and arg.get("by_zero_default") is not None:
            return f32(arg["by_zero_default"])
        if b == 0.0:
            raise NonFinite
        return check(a / b)
    if op == "sqrt":
        v = ev(arg)
        if v < 0:
            raise NonFinite
        return check(math.sqrt(v))
    if op == "pow":
        b, x = ev(arg["base"]), ev(arg["exponent"])
        if b == 0.0 and x < 0 or b < 0 and not x.is_integer():
            raise NonFinite
        try:
            return check(math.pow(b, x))
        except OverflowError:
            raise NonFinite from None
    if op == "exp":
        try:
            return check(math.exp(ev(arg)))
        except OverflowError:
            raise NonFinite from None
    if op in ("ln", "log10"):
        v = ev(arg)
        if v <= 0:
            raise NonFinite
        return check(math.log(v) if op == "ln" else math.log10(v))
    x = ev(arg["x"])
    t = ev(arg["target"]) if "target" in arg else 0.0
    m, s = f32(arg.get("midpoint", 0.5)), f32(arg.get("scale", 1.0))
    if op == "lin_decay":
        return max(0.0, 1.0 - (1.0 - m) / s * abs(x - t))
    if op == "exp_decay":
        return math.exp(math.log(m) / s * abs(x - t))
    return math.exp(math.log(m) / (s * s) * (x - t) ** 2)


def check(v):
    if not math.isfinite(v):
        raise NonFinite
    return v


def naive_score(e, payload, scores, defaults):
    v = naive(e, payload, scores, defaults)
    with np.errstate(over="ignore"):
        narrowed = np.float32(v)
    if not math.isfinite(v) or not np.isfinite(narrowed):
        raise NonFinite
    return float(narrowed)


numbers = st.floats(-4, 4, allow_nan=False).map(lambda x: round(x, 2)) | st.sampled_from([0, 1, -1, 0.5, 2])
leaves = numbers | st.sampled_from(["$score", "$score[1]", "a", "b"]) | st.just({"key": "tag", "match": {"value": "x"}})
decay_params = st.fixed_dictionaries(
    {"x": leaves},
    optional={"target": leaves, "midpoint": st.sampled_from([0.1, 0.5, 0.9]), "scale": st.sampled_from([0.5, 1, 3])},
)


def _nodes(children):
    return (
        st.builds(lambda xs: {"sum": xs}, st.lists(children, max_size=3))
        | st.builds(lambda xs: {"mult": xs}, st.lists(children, max_size=3))
        | st.builds(lambda x: {"neg": x}, children)
        | st.builds(lambda x: {"abs": x}, children)
        | st.builds(lambda x: {"sqrt": x}, children)
        | st.builds(lambda x: {"exp": x}, children)
        | st.builds(lambda x: {"ln": x}, children)
        | st.builds(lambda x: {"log10": x}, children)
        | st.builds(lambda b, x: {"pow": {"base": b, "exponent": x}}, children, children)
        | st.builds(
            lambda a, b, d: {"div": {"left": a, "right": b, **({} if d is None else {"by_zero_default": d})}},
            children,
            children,
            st.none() | numbers,
        )
        | st.builds(lambda kind, p: {kind: p}, st.sampled_from(["lin_decay", "exp_decay", "gauss_decay"]), decay_params)
    )


expressions = st.recursive(leaves, _nodes, max_leaves=12)


@settings(max_examples=600, deadline=None)
@given(
    expressions,
    st.fixed_dictionaries({}, optional={"a": numbers, "b": numbers, "tag": st.sampled_from(["x", "y"])}),
    st.lists(st.none() | numbers.map(float), max_size=2),
    st.fixed_dictionaries({}, optional={"a": numbers, "$score[1]": numbers}),
)
def test_evaluation_matches_a_plain_evaluator(expr, payload, scores, defaults):
    try:
        want = naive_score(expr, payload, scores, defaults)
    except NonFinite:
        with pytest.raises(BadInput, match="^The expression .* produced a non-finite number$"):
            score(expr, payload, scores, defaults)
        return
    except KeyError as missing:
        with pytest.raises(BadInput) as info:
            score(expr, payload, scores, defaults)
        assert str(info.value) == (
            f"Expected number value for {missing.args[0]} in the payload and/or in the formula defaults. "
            "Error: No value found in a payload nor defaults"
        )
        return
    got = score(expr, payload, scores, defaults)
    assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-30), (got, want)


# ----------------------------------------------------------------------- hand-checked


def test_constants_are_f32_and_the_result_is_narrowed():
    assert score(0.1) == float(np.float32(0.1))
    assert score({"sum": [0.1, 0.2]}) == float(np.float32(float(np.float32(0.1)) + float(np.float32(0.2))))
    with pytest.raises(BadInput) as info:
        score({"mult": [1e30, 1e30]})  # sum and mult are unchecked; the f32 narrowing is not
    assert str(info.value) == (
        "The expression 1000000030094932700000000000000000000000000000000000000000000 as f32 = inf "
        "produced a non-finite number"
    )


def test_variables_scores_defaults_and_arrays():
    assert score("$score[1]", scores=[None, 2.5]) == 2.5
    assert score("$score[3]", defaults={"$score[3]": 7}) == 7.0
    assert score("$score[3]", defaults={"$score[3]": "no"}) == 0.0  # a non-number default: 0
    assert score("$score") == 0.0
    assert score("a.b", {"a": {"b": [4]}}) == 4.0  # one value after flattening
    assert score("a", {}, defaults={"a": 3}) == 3.0
    assert score("a", {"a": []}, defaults={"a": 3}) == 3.0  # no value: the default
    with pytest.raises(BadInput, match="^Expected number value for a in .* Error: Value is not a number$"):
        score("a", {"a": [1, 2]})  # several values are an array, not a number
    with pytest.raises(BadInput, match="Error: Value is not a number$"):
        score("a", {"a": None}, defaults={"a": 1})  # null is a value: no default
    with pytest.raises(BadInput, match="Error: Value is not a number$"):
        score("a", {}, defaults={"a": [1]})  # defaults are taken as they are


def test_div_and_checked_functions_word_errors_as_qdrant():
    assert score({"div": {"left": 0, "right": "missing"}}) == 0.0  # the divisor is not evaluated
    assert score({"div": {"left": 1, "right": 0, "by_zero_default": 4}}) == 4.0
    assert score({"mult": [0, "missing"]}) == 0.0
    cases = {
        "1/0 = inf": {"div": {"left": 1, "right": 0}},
        "-2/-0 = inf": {"div": {"left": -2, "right": {"neg": 0}}},
        "√-4 = NaN": {"sqrt": -4},
        "0^-1 = inf": {"pow": {"base": 0, "exponent": -1}},
        "-8^0.5 = NaN": {"pow": {"base": -8, "exponent": 0.5}},
        "exp(1000) = inf": {"exp": 1000},
        "ln(0) = -inf": {"ln": 0},
        "log10(-1) = NaN": {"log10": -1},
    }
    for text, expr in cases.items():
        with pytest.raises(BadInput) as info:
            score(expr)
        assert str(info.value) == f"The expression {text} produced a non-finite number"
        assert status_and_text(info.value) == (400, f"Wrong input: The expression {text} produced a non-finite number")


def test_parse_errors():
    with pytest.raises(BadInput) as info:
        formula.parse({"exp_decay": {"x": 1, "midpoint": 1.5}})
    assert str(info.value) == "Validation failed: Decay midpoint should be between 0.0 and 1.0 (exclusive), got 1.5."
    with pytest.raises(BadInput) as info:
        formula.parse({"lin_decay": {"x": 1, "scale": 0}})
    assert str(info.value) == "Validation failed: Decay scale should be non-zero positive, got 0."
    for text, expr in {
        "Invalid reserved word: $foo": "$foo",
        "Invalid reserved variable: $score.x": "$score.x",
        "Invalid reserved variable: $score[]": "$score[]",
        "Invalid payload variable: a b": "a b",
    }.items():
        with pytest.raises(QdrantError) as info:
            formula.parse({"sum": [1, expr]})
        assert status_and_text(info.value) == (500, "Service internal error: " + text)
    with pytest.raises(QdrantError):
        formula.parse(1, {"$bad": 1})  # defaults' keys are variables too


def test_decays_conditions_geo_and_datetimes():
    assert score({"exp_decay": {"x": 2, "scale": 2}}) == pytest.approx(0.5)  # midpoint at scale
    assert score({"gauss_decay": {"x": 5, "target": 2, "scale": 3, "midpoint": 0.25}}) == pytest.approx(0.25)
    assert score({"lin_decay": {"x": 10, "scale": 1}}) == 0.0
    assert score({"key": "tag", "match": {"value": "x"}}, {"tag": "x"}) == 1.0
    assert score({}) == 1.0  # an empty filter is a condition that always holds
    berlin, munich = {"lon": 13.393236, "lat": 52.504043}, {"lon": 11.576124, "lat": 48.137154}
    d = score({"geo_distance": {"origin": berlin, "to": "loc"}}, {"loc": munich})
    assert d == pytest.approx(504_000, rel=0.01)
    with pytest.raises(BadInput, match="^Expected geo point value for loc .* Error: missing field `lat`$"):
        score({"geo_distance": {"origin": berlin, "to": "loc"}}, {"loc": {"lon": 1}})
    assert score({"datetime": "1970-01-02T00:00:00Z"}) == 86400.0
    assert score({"datetime_key": "t"}, {"t": "1970-01-01T00:00:01.5Z"}) == 1.5
    with pytest.raises(BadInput, match="^Expected datetime value for t .* Error: Value is not a string$"):
        score({"datetime_key": "t"}, {"t": 5})


def test_rescore_dedups_prefetches_and_orders_by_score_then_id():
    f = formula.parse({"sum": ["$score[0]", "$score[1]"]})
    pre = [[ScoredPoint(3, 0, 1.0), ScoredPoint(1, 0, 0.5)], [ScoredPoint(1, 0, 0.5), ScoredPoint(2, 0, 0.25)]]
    got = formula.rescore(f, pre, lambda pid: {}, matches, limit=10)
    assert got == [(1, 1.0), (3, 1.0), (2, 0.25)]
    assert formula.rescore(f, pre, lambda pid: {}, matches, limit=1) == [(1, 1.0)]


# -------------------------------------------------------------------------- the oracle

PAYLOADS = [
    {"price": 10, "tag": "h1", "loc": {"lon": 13.4, "lat": 52.5}, "t": "2024-01-01T00:00:00Z"},
    {"price": 0, "tag": "p", "loc": {"lon": 11.6, "lat": 48.1}, "t": "2024-01-02T12:00:00Z"},
    {"price": [3.5], "tag": "h2", "t": "2023-12-31T00:00:00Z"},
    {"tag": "li", "loc": {"lon": 2.35, "lat": 48.85}, "t": "2024-01-01T06:00:00Z"},
    {"price": 7, "loc": {"lon": -0.12, "lat": 51.5}, "t": "2024-01-03T00:00:00Z"},
    {"price": 1.25, "tag": "h1", "loc": {"lon": 13.3, "lat": 52.4}, "t": "2024-01-01T00:00:00Z"},
]
FORMULAS = [
    ({"sum": ["$score", {"mult": [0.5, {"key": "tag", "match": {"value": "h1"}}]}]}, None),
    ({"mult": ["$score", {"div": {"left": "price", "right": {"sum": ["price", -7]}, "by_zero_default": 2}}]}, {"price": 1}),
    ({"sum": [{"sqrt": {"abs": "price"}}, {"log10": {"sum": ["price", 1]}}, {"neg": {"ln": 2}}]}, {"price": 4}),
    ({"pow": {"base": "$score[0]", "exponent": 2}}, None),
    ({"sum": ["$score[0]", "$score[1]"]}, {"$score[1]": 0.25}),
    ({"exp_decay": {"x": "price", "target": 5, "scale": 2, "midpoint": 0.3}}, {"price": 0}),
    ({"gauss_decay": {"x": {"geo_distance": {"origin": {"lon": 13.39, "lat": 52.5}, "to": "loc"}}, "scale": 500000}},
     {"loc": {"lon": 0, "lat": 0}}),
    ({"lin_decay": {"x": {"datetime_key": "t"}, "target": {"datetime": "2024-01-01T00:00:00Z"}, "scale": 172800}}, None),
    ({"exp": {"mult": [-1, "price"]}}, {"price": 0}),
]


@pytest.fixture(scope="module")
def oracle():
    client = QdrantClient(":memory:")
    client.create_collection(
        "c",
        vectors_config={
            "a": models.VectorParams(size=3, distance=models.Distance.DOT),
            "b": models.VectorParams(size=3, distance=models.Distance.DOT),
        },
    )
    rng = np.random.default_rng(7)
    client.upsert(
        "c",
        [
            models.PointStruct(id=i, vector={"a": rng.random(3).tolist(), "b": rng.random(3).tolist()}, payload=p)
            for i, p in enumerate(PAYLOADS)
        ],
    )
    return client


@pytest.mark.parametrize("expr, defaults", FORMULAS)
def test_formulas_match_qdrant_client(oracle, expr, defaults):
    prefetch = [
        models.Prefetch(query=[1.0, 0.5, 0.25], using="a", limit=4),
        models.Prefetch(query=[0.2, 0.9, 0.1], using="b", limit=3),
    ]
    query = models.FormulaQuery.model_validate({"formula": expr, "defaults": defaults or {}})
    want = oracle.query_points("c", prefetch=prefetch, query=query, limit=10).points
    lists = [oracle.query_points("c", query=p.query, using=p.using, limit=p.limit).points for p in prefetch]
    payloads = {r.id: r.payload for r in oracle.retrieve("c", list(range(len(PAYLOADS))))}
    got = formula.rescore(formula.parse(expr, defaults), lists, payloads.__getitem__, matches, limit=10)
    assert sorted(p.id for p in want) == sorted(pid for pid, _ in got)
    want_score = {p.id: p.score for p in want}
    for pid, s in got:
        assert math.isclose(s, want_score[pid], rel_tol=1e-6, abs_tol=1e-6), (pid, s, want_score[pid])
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
