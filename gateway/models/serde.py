"""Leaf types that fail the way Qdrant's serde deserialisation fails.

Qdrant parses request bodies with serde_json into Rust types; a body that does
not fit answers 400 "Format error in JSON body: <serde message>". Every field
type here rejects what the Rust type would reject and says it with serde's
words: ``invalid type: string "x", expected usize``, ``invalid value: integer
`-1`, expected u64``, ``unknown variant `Foo`, expected one of ...``,
``data did not match any variant of untagged enum Condition``.

The messages travel inside pydantic errors of type ``serde`` (ctx ``m`` is the
message, ctx ``k`` says how serde_json would place it: ``value``, ``custom``,
``key:<name>`` or ``struct``, see ``serde_error``); ``gateway.models.parse``
picks the error serde would have met first.

Scalar checks are plain Python functions (a few per request); vectors stay
native ``list[float]`` so that a 1,000-point upsert is validated by
pydantic-core without a Python call per element.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Union

from pydantic import Field, PlainValidator, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

MAX_U64 = 2**64 - 1
MAX_U32 = 2**32 - 1

# ---------------------------------------------------------------------------
# How Rust prints values.
# ---------------------------------------------------------------------------


def _digits(f: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``abs(f)`` and the decimal point position:
    ``abs(f) == 0.DIGITS * 10**point``. Python's repr and Rust's ryu agree on
    the digits; only the layout differs."""
    text = repr(abs(f))
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return stripped.rstrip("0"), point


def ryu(f: float) -> str:
    """serde_json's float display (the ``ryu`` crate): ``1.0``, ``0.5``,
    ``1e20``, ``1e-7`` -- used in serde messages and validation params."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "inf" if f > 0 else "-inf"
    sign = "-" if str(f).startswith("-") else ""
    if f == 0:
        return sign + "0.0"
    digits, point = _digits(f)
    length = len(digits)
    k = point - length
    if 0 <= k and point <= 16:
        out = digits + "0" * k + ".0"
    elif 0 < point <= 16:
        out = digits[:point] + "." + digits[point:]
    elif -5 < point <= 0:
        out = "0." + "0" * (-point) + digits
    elif length == 1:
        out = f"{digits}e{point - 1}"
    else:
        out = f"{digits[0]}.{digits[1:]}e{point - 1}"
    return sign + out


def rust_display_float(f: float) -> str:
    """Rust's ``{}`` for an f64: no exponent, no trailing ``.0`` (``1``, ``1.5``,
    ``100000000000000000000``)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "inf" if f > 0 else "-inf"
    sign = "-" if str(f).startswith("-") else ""
    if f == 0:
        return sign + "0"
    digits, point = _digits(f)
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    if point > 0:
        return sign + digits[:point] + "." + digits[point:]
    return sign + "0." + "0" * (-point) + digits


def rust_debug_str(s: str) -> str:
    """Rust's ``{:?}`` of a str: quoted, with Rust's escapes."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append("\\u{%x}" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def unexpected(value: Any) -> str:
    """serde_json's description of a JSON value it did not expect."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        if value > MAX_U64 or value < -(2**63):  # serde_json parses these as f64
            return f"floating point `{ryu(float(value))}`"
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{ryu(value)}`"
    if isinstance(value, str):
        return "string " + rust_debug_str(value)
    if isinstance(value, list):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return "unit value"


def one_of(names: list[str] | tuple[str, ...]) -> str:
    """serde's list of alternatives: "`a`", "`a` or `b`", "one of `a`, `b`, `c`"."""
    quoted = [f"`{n}`" for n in names]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return "one of " + ", ".join(quoted)


def invalid_type(value: Any, expected: str) -> str:
    return f"invalid type: {unexpected(value)}, expected {expected}"


def serde_error(message: str, kind: str = "value") -> PydanticCustomError:
    """A pydantic error carrying serde's message. ``kind`` tells the parser where
    serde_json would report it: ``value`` (at the offending value), ``custom``
    (an error raised after the value was read: reported past it), ``key:<name>``
    (an unknown key, reported after the key) or ``struct`` (a whole-struct
    ``try_from`` check: no position)."""
    return PydanticCustomError("serde", "{m}", {"m": message, "k": kind})


# ---------------------------------------------------------------------------
# Scalars.
# ---------------------------------------------------------------------------


def _uint(expected: str, maximum: int, minimum: int = 0):
    def check(value: Any) -> int:
        if type(value) is int:
            if minimum <= value <= maximum:
                return value
            if -(2**63) <= value <= MAX_U64:
                raise serde_error(f"invalid value: integer `{value}`, expected {expected}")
        raise serde_error(invalid_type(value, expected))

    return PlainValidator(check)


U64 = Annotated[int, _uint("u64", MAX_U64)]
USize = Annotated[int, _uint("usize", MAX_U64)]
U32 = Annotated[int, _uint("u32", MAX_U32)]
NonZeroU64 = Annotated[int, _uint("a nonzero u64", MAX_U64, minimum=1)]
NonZeroU32 = Annotated[int, _uint("a nonzero u32", MAX_U32, minimum=1)]


def _i64(value: Any) -> int:
    if type(value) is int:
        if -(2**63) <= value < 2**63:
            return value
        if value <= MAX_U64:
            raise serde_error(f"invalid value: integer `{value}`, expected i64")
    raise serde_error(invalid_type(value, "i64"))


I64 = Annotated[int, PlainValidator(_i64)]


def _float(expected: str):
    def check(value: Any) -> float | int:
        # Numbers keep their JSON type (5 stays 5) so filters dump back unchanged.
        if type(value) is float or type(value) is int:
            return value
        raise serde_error(invalid_type(value, expected))

    return PlainValidator(check)


F32 = Annotated[float, _float("f32")]
F64 = Annotated[float, _float("f64")]


def _bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise serde_error(invalid_type(value, "a boolean"))


def _str(value: Any) -> str:
    if type(value) is str:
        return value
    raise serde_error(invalid_type(value, "a string"))


Bool = Annotated[bool, PlainValidator(_bool)]
Str = Annotated[str, PlainValidator(_str)]

# Qdrant's JsonPath: ``a.b[0].c[]``; a key is "quoted" or a run of alphanumeric
# characters (Unicode, as Rust's char::is_alphanumeric), ``_`` and ``-``.
_KEY = r'(?:[^\W]|-)+|"[^"]*"'
_JSON_PATH = re.compile(rf"(?:{_KEY})(?:\.(?:{_KEY})|\[\d+\]|\[\])*")


def _json_path(value: Any) -> str:
    if type(value) is not str:
        raise serde_error(invalid_type(value, "a string"))
    if not _JSON_PATH.fullmatch(value):
        raise serde_error("Invalid json path", "custom")
    return value


JsonPath = Annotated[str, PlainValidator(_json_path)]


def _payload(value: Any) -> dict:
    if type(value) is dict:
        return value
    raise serde_error(invalid_type(value, "a map"))


Payload = Annotated[dict[str, Any], PlainValidator(_payload)]


def enum(*variants: str):
    """A Rust enum of unit variants spelled ``variants`` (kept as a plain str)."""
    allowed = frozenset(variants)

    def check(value: Any) -> str:
        if type(value) is str:
            if value in allowed:
                return value
            raise serde_error(f"unknown variant `{value}`, expected {one_of(variants)}")
        raise serde_error(invalid_type(value, "string or map"))

    return Annotated[str, PlainValidator(check)]


# ---------------------------------------------------------------------------
# Point ids.
# ---------------------------------------------------------------------------

_HEX = "[0-9a-fA-F]"
_HYPHENATED = rf"({_HEX}{{8}})-({_HEX}{{4}})-({_HEX}{{4}})-({_HEX}{{4}})-({_HEX}{{12}})"
_UUID_FORMS = (
    re.compile(_HYPHENATED),
    re.compile(rf"({_HEX}{{8}})({_HEX}{{4}})({_HEX}{{4}})({_HEX}{{4}})({_HEX}{{12}})"),  # simple
    re.compile(r"\{" + _HYPHENATED + r"\}"),  # braced (Microsoft GUID)
    re.compile("urn:uuid:" + _HYPHENATED),
)


def parse_uuid(text: str) -> str | None:
    """The canonical (hyphenated, lower-case) form of ``text`` if the Rust uuid
    crate's ``Uuid::parse_str`` accepts it: simple, hyphenated, braced or
    ``urn:uuid:`` forms, hex digits in either case. None otherwise."""
    for form in _UUID_FORMS:
        m = form.fullmatch(text)
        if m:
            return "-".join(m.groups()).lower()
    return None


def _serde_value_debug(value: Any) -> str:
    """Rust Debug of a serde_value::Value, as Qdrant's SerdeValue prints nested data."""
    if value is None:
        return "Unit"
    if value is True or value is False:
        return f"Bool({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"U64({value})" if value >= 0 else f"I64({value})"
    if isinstance(value, float):
        return f"F64({ryu(value)})"
    if isinstance(value, str):
        return f"String({rust_debug_str(value)})"
    if isinstance(value, list):
        return "[" + ", ".join(_serde_value_debug(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ", ".join(f"String({rust_debug_str(k)}): {_serde_value_debug(v)}" for k, v in items) + "}"
    return repr(value)


def point_id_error(value: Any) -> str:
    """Qdrant's ExtendedPointId deserialisation error (segment types.rs: "value
    {} is not a valid point ID, valid values are either an unsigned integer or a
    UUID", the value printed by its SerdeValue helper)."""
    if value is None:
        shown = "Unit"
    elif value is True or value is False:
        shown = "true" if value else "false"
    elif isinstance(value, int) and -(2**63) <= value <= MAX_U64:
        shown = str(value)
    elif isinstance(value, (int, float)):
        shown = rust_display_float(float(value))
    elif isinstance(value, str):
        shown = value
    else:
        shown = _serde_value_debug(value)
    return f"value {shown} is not a valid point ID, valid values are either an unsigned integer or a UUID"


def canonical_id(raw: Any) -> int | str:
    """A point id as the engine wants it: an unsigned int unchanged, a UUID
    string in canonical hyphenated lower-case form. Anything else raises
    ValueError with Qdrant's message (negative ints, floats, bools, non-UUID
    strings)."""
    if type(raw) is int and 0 <= raw <= MAX_U64:
        return raw
    if type(raw) is str:
        canonical = parse_uuid(raw)
        if canonical is not None:
            return canonical
    raise ValueError(point_id_error(raw))


def _point_id(value: Any) -> int | str:
    try:
        return canonical_id(value)
    except ValueError as exc:
        raise serde_error(str(exc), "custom") from None


ExtendedPointId = Annotated[int | str, PlainValidator(_point_id)]

# ---------------------------------------------------------------------------
# Unions.
# ---------------------------------------------------------------------------


def untagged(name: str, *, expecting: str | None = None):
    """A serde ``#[serde(untagged)]`` enum: variants tried in order, and when
    none fits serde says only "data did not match any variant of untagged enum
    NAME" (or the enum's own ``expecting`` text) -- the variants' own errors are
    never shown."""
    message = expecting or f"data did not match any variant of untagged enum {name}"

    def wrap(value: Any, handler):
        try:
            return handler(value)
        except ValidationError:
            raise serde_error(message, "custom") from None

    return WrapValidator(wrap)


def Untagged(name: str, *variants: Any, expecting: str | None = None) -> Any:
    """``Annotated[Union[variants], left-to-right, untagged(name)]`` (variants may
    be forward references by name)."""
    if len(variants) == 1:
        return Annotated[variants[0], untagged(name, expecting=expecting)]
    union = Union.__getitem__(tuple(variants))
    return Annotated[union, Field(union_mode="left_to_right"), untagged(name, expecting=expecting)]


def one_or_many(value: Any, handler):
    """Qdrant's MaybeOneOrMany (serde_untagged): null -> None, an array -> the
    list, an object -> a one-item list. The list is what Qdrant itself keeps
    (Option<Vec<T>>), so must/should/must_not/prefetch/context always dump as
    lists."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = [value]
    elif not isinstance(value, list):
        raise serde_error(invalid_type(value, "null, array or map"))
    return handler(value)


OneOrMany = WrapValidator(one_or_many)
