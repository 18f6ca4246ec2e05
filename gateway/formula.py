"""Formula queries (``{"formula": EXPR, "defaults": {...}}``): parsed once, scored per point.

Mirrors Qdrant 1.15: the REST ``Expression`` (lib/api/src/rest/schema.rs), its parsing
(lib/collection/src/operations/universal_query/formula.rs ``parse_and_convert``,
lib/segment/.../rescore_formula/parsed_formula.rs) and its evaluation (``formula_scorer.rs``,
``value_retriever.rs``). The input is the request JSON already validated by
``gateway.models`` (so shapes are right; only what Qdrant checks later is checked here).

Numbers: constants, ``by_zero_default``, ``midpoint`` and ``scale`` are f32 in the request
and widened to f64; everything is evaluated in f64 and the result narrowed to f32.
``$score`` / ``$score[i]`` is the point's score in prefetch ``i`` (else the default, else 0);
a payload variable is the value at its key path (arrays flattened one level unless the path
ends in ``[]``; one value is used as is, several as an array), else its default, else an
error; a condition is 1 or 0 (checked by the caller's ``matches``); ``datetime`` and
``datetime_key`` are seconds since the epoch (microsecond precision); ``geo_distance`` is
haversine metres.

Errors, as Qdrant words them: a missing or mistyped variable and a non-finite result of
``div``/``sqrt``/``pow``/``exp``/``log10``/``ln`` (or of narrowing to f32) are 400 BadInput;
a bad decay ``midpoint``/``scale`` is 400 "Validation failed: ..."; an unparsable variable
name or ``datetime`` constant is a plain ``String`` error in Qdrant, which its
``From<String> for CollectionError`` turns into a 500 service error -- mirrored as is.
``sum`` and ``mult`` are not checked (Qdrant does not check them either); a non-finite sum
is caught when the score is narrowed to f32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway import errors
from gateway.errors import SERVICE_ERROR, QdrantError
from gateway.models.serde import invalid_type, rust_display_float
from shard import json_path
from shard.json_path import WILDCARD, JsonPath
from shard.payload_index.geo import haversine_m
from shard.payload_index.values import parse_datetime
from shard.points import id_sort_key
from shard.types import BadInput

DEFAULT_DECAY_MIDPOINT = 0.5
DEFAULT_DECAY_SCALE = 1.0
CONDITION_KEYS = frozenset({"key", "is_empty", "is_null", "has_id", "has_vector", "nested"})
FILTER_KEYS = frozenset({"must", "should", "must_not", "min_should"})
# chrono's ParseError text for a string that is no datetime (Qdrant passes it on).
DATETIME_PARSE_ERROR = "input contains invalid characters"

Matches = Callable[[Any, Any], bool]


def _f32(x: float) -> float:
    """An f32 request number as the f64 Qdrant computes with."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _rust(x: float) -> str:
    return rust_display_float(x)


# ---------------------------------------------------------------------------- errors


def non_finite(expression: str) -> BadInput:
    return BadInput(errors.non_finite_number(expression))


def variable_type_error(key: JsonPath, expected: str, description: str) -> BadInput:
    return BadInput(errors.formula_variable_type(key, expected, description))


def service_error(text: str) -> QdrantError:
    """500 -- a ``String`` error turned into CollectionError::ServiceError."""
    return QdrantError(SERVICE_ERROR + text, 500)


# ----------------------------------------------------------------------- variables


@dataclass(frozen=True)
class Score:
    prefetch: int


def parse_variable(text: str) -> Score | JsonPath:
    """parsed_formula.rs ``VariableId::from_str``: ``$score``, ``$score[i]`` or a key path."""
    if text.startswith("$"):
        try:
            path = json_path.parse(text[1:])
        except BadInput:
            raise service_error(f"Invalid reserved variable: {text}") from None
        if path.first_key != "score":
            raise service_error(f"Invalid reserved word: {text}")
        if not path.rest:
            return Score(0)
        if len(path.rest) == 1 and type(path.rest[0]) is int:
            return Score(path.rest[0])
        raise service_error(f"Invalid reserved variable: {text}")
    try:
        return json_path.parse(text)
    except BadInput:
        raise service_error(f"Invalid payload variable: {text}") from None


# ------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Point:
    """What evaluating a formula for one point reads."""

    id: Any
    payload: Mapping[str, Any]
    scores: Sequence[float | None]  # the point's score in each prefetch, None if absent
    matches: Matches  # matches(condition, point) -> bool


class Formula:
    """A parsed formula: ``score(point)`` is the point's new score (an f32 value)."""

    def __init__(self, root: Callable[[Point], float], defaults: dict[Any, Any]):
        self._root = root
        self.defaults = defaults

    def score(self, point: Point) -> float:
        value = self._root(point)
        with np.errstate(over="ignore", invalid="ignore"):
            narrowed = np.float32(value)
        if not math.isfinite(narrowed):
            raise non_finite(f"{_rust(value)} as f32 = {_rust(float(narrowed))}")
        return float(narrowed)


def parse(formula: Any, defaults: Mapping[str, Any] | None = None) -> Formula:
    """Parse the request's ``formula`` and ``defaults`` once (errors in tree order, then
    the defaults' keys, as Qdrant)."""
    parsed_defaults: dict[Any, Any] = {}  # filled after the tree, read at evaluation
    root = _Parser(parsed_defaults).expr(formula)
    for key, value in (defaults or {}).items():
        parsed_defaults[parse_variable(key)] = value
    return Formula(root, parsed_defaults)


class _Parser:
    def __init__(self, defaults: dict[Any, Any]):
        self.defaults = defaults

    def expr(self, e: Any) -> Callable[[Point], float]:
        if isinstance(e, bool):
            raise BadInput(invalid_type(e, "f32"))  # the models reject it first
        if isinstance(e, (int, float)):
            c = _f32(e)
            return lambda p: c
        if isinstance(e, str):
            var = parse_variable(e)
            if isinstance(var, Score):
                return self._score(var.prefetch)
            return self._number(var)
        if not isinstance(e, dict):
            raise BadInput(invalid_type(e, "an expression"))
        keys = e.keys()
        if keys & CONDITION_KEYS or keys <= FILTER_KEYS:
            return lambda p, cond=e: 1.0 if p.matches(cond, p) else 0.0
        (op,) = keys if len(keys) == 1 else (None,)
        builder = getattr(self, "_op_" + op, None) if op else None
        if builder is None:
            raise BadInput(invalid_type(e, "an expression"))
        return builder(e[op])

    # --- variables ---------------------------------------------------------

    def _score(self, i: int) -> Callable[[Point], float]:
        def score(p: Point) -> float:
            if i < len(p.scores) and p.scores[i] is not None:
                return float(p.scores[i])
            default = _as_f64(self.defaults.get(Score(i)))
            return 0.0 if default is None else default

        return score

    def _value(self, key: JsonPath, p: Point, expected: str) -> Any:
        values = json_path.value_get(p.payload, key)
        if not (key.rest and key.rest[-1] is WILDCARD):
            flat: list = []
            for v in values:
                if isinstance(v, list):
                    flat.extend(v)
                else:
                    flat.append(v)
            values = flat
        if len(values) == 1:
            return values[0]
        if values:
            return values
        if key in self.defaults:
            return self.defaults[key]
        raise variable_type_error(key, expected, "No value found in a payload nor defaults")

    def _number(self, key: JsonPath) -> Callable[[Point], float]:
        def number(p: Point) -> float:
            value = _as_f64(self._value(key, p, "number"))
            if value is None:
                raise variable_type_error(key, "number", "Value is not a number")
            return value

        return number

    # --- terminals ---------------------------------------------------------

    def _op_geo_distance(self, params: dict) -> Callable[[Point], float]:
        origin, key = params["origin"], json_path.parse(params["to"])
        lon, lat = float(origin["lon"]), float(origin["lat"])

        def distance(p: Point) -> float:
            d_lon, d_lat = _geo_point(self._value(key, p, "geo point"), key)
            return haversine_m(lon, lat, d_lon, d_lat)

        return distance

    def _op_datetime(self, text: str) -> Callable[[Point], float]:
        micros = parse_datetime(text)
        if micros is None:
            raise service_error(DATETIME_PARSE_ERROR)
        seconds = micros / 1_000_000.0
        return lambda p: seconds

    def _op_datetime_key(self, path: str) -> Callable[[Point], float]:
        key = json_path.parse(path)

        def seconds(p: Point) -> float:
            value = self._value(key, p, "datetime")
            if not isinstance(value, str):
                raise variable_type_error(key, "datetime", "Value is not a string")
            micros = parse_datetime(value)
            if micros is None:
                raise variable_type_error(key, "datetime", DATETIME_PARSE_ERROR)
            return micros / 1_000_000.0

        return seconds

    # --- arithmetic ----------------------------------------------------------

    def _op_mult(self, items: list) -> Callable[[Point], float]:
        factors = [self.expr(x) for x in items]

        def mult(p: Point) -> float:
            product = 1.0
            for f in factors:
                v = f(p)
                if v == 0.0:  # Qdrant's shortcut: later factors are not evaluated
                    return 0.0
                product *= v
            return product

        return mult

    def _op_sum(self, items: list) -> Callable[[Point], float]:
        terms = [self.expr(x) for x in items]

        def total(p: Point) -> float:
            acc = 0.0
            for t in terms:
                acc += t(p)
            return acc

        return total

    def _op_neg(self, x: Any) -> Callable[[Point], float]:
        f = self.expr(x)
        return lambda p: -f(p)

    def _op_abs(self, x: Any) -> Callable[[Point], float]:
        f = self.expr(x)
        return lambda p: abs(f(p))

    def _op_div(self, params: dict) -> Callable[[Point], float]:
        left, right = self.expr(params["left"]), self.expr(params["right"])
        raw_default = params.get("by_zero_default")
        default = None if raw_default is None else _f32(raw_default)

        def div(p: Point) -> float:
            a = left(p)
            if a == 0.0:  # the divisor is not even evaluated
                return 0.0
            b = right(p)
            if b == 0.0 and default is not None:
                return default
            q = _divide(a, b)
            if math.isfinite(q):
                return q
            raise non_finite(f"{_rust(a)}/{_rust(b)} = {_rust(q)}")

        return div

    def _unary(self, x: Any, fn: Callable[[float], float], show: Callable[[str, str], str]) -> Callable[[Point], float]:
        f = self.expr(x)

        def apply(p: Point) -> float:
            v = f(p)
            r = fn(v)
            if math.isfinite(r):
                return r
            raise non_finite(show(_rust(v), _rust(r)))

        return apply

    def _op_sqrt(self, x: Any):
        return self._unary(x, _sqrt, lambda v, r: f"√{v} = {r}")

    def _op_exp(self, x: Any):
        return self._unary(x, _exp, lambda v, r: f"exp({v}) = {r}")

    def _op_log10(self, x: Any):
        return self._unary(x, lambda v: _log(v, math.log10), lambda v, r: f"log10({v}) = {r}")

    def _op_ln(self, x: Any):
        return self._unary(x, lambda v: _log(v, math.log), lambda v, r: f"ln({v}) = {r}")

    def _op_pow(self, params: dict) -> Callable[[Point], float]:
        base, exponent = self.expr(params["base"]), self.expr(params["exponent"])

        def power(p: Point) -> float:
            b, e = base(p), exponent(p)
            r = _powf(b, e)
            if math.isfinite(r):
                return r
            raise non_finite(f"{_rust(b)}^{_rust(e)} = {_rust(r)}")

        return power

    # --- decays ------------------------------------------------------------

    def _decay(self, params: dict, kind: str) -> Callable[[Point], float]:
        lam = decay_lambda(params.get("midpoint"), params.get("scale"), kind)
        x = self.expr(params["x"])
        target = self.expr(params["target"]) if params.get("target") is not None else (lambda p: 0.0)
        shape = _DECAYS[kind]
        return lambda p: shape(x(p), target(p), lam)

    def _op_lin_decay(self, params: dict):
        return self._decay(params, "lin")

    def _op_exp_decay(self, params: dict):
        return self._decay(params, "exp")

    def _op_gauss_decay(self, params: dict):
        return self._decay(params, "gauss")


def decay_lambda(midpoint: float | None, scale: float | None, kind: str) -> float:
    """parsed_formula.rs ``decay_params_to_lambda``: the decay's shape as one constant."""
    m = _f32(DEFAULT_DECAY_MIDPOINT if midpoint is None else midpoint)
    s = _f32(DEFAULT_DECAY_SCALE if scale is None else scale)
    if m <= 0.0 or m >= 1.0:
        raise BadInput(f"Validation failed: Decay midpoint should be between 0.0 and 1.0 (exclusive), got {_rust(m)}.")
    if s <= 0.0:
        raise BadInput(f"Validation failed: Decay scale should be non-zero positive, got {_rust(s)}.")
    if kind == "lin":
        return (1.0 - m) / s
    if kind == "exp":
        return math.log(m) / s
    return math.log(m) / (s * s)


def _lin_decay(x: float, target: float, lam: float) -> float:
    v = -lam * abs(x - target) + 1.0
    return v if v > 0.0 else 0.0  # f64::max(v, 0.0), NaN included


def _exp_decay(x: float, target: float, lam: float) -> float:
    return _exp(lam * abs(x - target))


def _gauss_decay(x: float, target: float, lam: float) -> float:
    diff = x - target
    return _exp(lam * diff * diff)


_DECAYS = {"lin": _lin_decay, "exp": _exp_decay, "gauss": _gauss_decay}


# ------------------------------------------------------- IEEE arithmetic (as Rust)


def _divide(a: float, b: float) -> float:
    if b != 0.0:
        return a / b
    if a != a:
        return a
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _sqrt(v: float) -> float:
    return math.sqrt(v) if v >= 0.0 or v != v else math.nan


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _log(v: float, fn: Callable[[float], float]) -> float:
    if v > 0.0 or v != v:
        return fn(v)
    return -math.inf if v == 0.0 else math.nan


def _powf(b: float, e: float) -> float:
    """C's ``pow`` (Rust's ``powf``): inf and NaN instead of Python's exceptions."""
    with np.errstate(all="ignore"):
        return float(np.power(np.float64(b), np.float64(e)))


def _as_f64(value: Any) -> float | None:
    """serde_json ``Value::as_f64``: any JSON number, nothing else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _geo_point(value: Any, key: JsonPath) -> tuple[float, float]:
    """``serde_json::from_value::<GeoPoint>``: an object with numeric ``lon`` and ``lat``."""
    if not isinstance(value, dict):
        raise variable_type_error(key, "geo point", invalid_type(value, "struct GeoPoint"))
    coords = []
    for field in ("lon", "lat"):
        if field not in value:
            raise variable_type_error(key, "geo point", f"missing field `{field}`")
        number = _as_f64(value[field])
        if number is None:
            raise variable_type_error(key, "geo point", invalid_type(value[field], "f64"))
        coords.append(number)
    lon, lat = coords
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise variable_type_error(
            key,
            "geo point",
            f"Wrong format of GeoPoint payload: expected `lat` = {_rust(lat)} within [-90;90] "
            f"and `lon` = {_rust(lon)} within [-180;180]",
        )
    return lon, lat


# ------------------------------------------------------------------ rescoring


def rescore(
    formula: Formula,
    prefetches: Sequence[Sequence[Any]],
    payload_of: Callable[[Any], Mapping[str, Any]],
    matches: Matches,
    limit: int,
) -> list[tuple[Any, float]]:
    """One shard's formula rescoring (segment ``do_rescore_with_formula``): every point
    of any prefetch (items with ``.id`` and ``.score``) scored once, best ``limit`` kept
    as ``(id, score)``. Qdrant leaves ties to a hash set; Shoal orders them by id."""
    scores = [{item.id: item.score for item in ranked} for ranked in prefetches]
    seen: dict[Any, None] = {}
    for ranked in prefetches:
        for item in ranked:
            seen.setdefault(item.id)
    out = []
    for pid in seen:
        point = Point(pid, payload_of(pid), [s.get(pid) for s in scores], matches)
        out.append((pid, formula.score(point)))
    out.sort(key=lambda e: (-e[1], id_sort_key(e[0])))
    return out[:limit]
