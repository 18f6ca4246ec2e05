"""Filters and every condition type (Qdrant segment ``types.rs``).

Structure and types are checked here; the engine receives the filter back as
plain JSON with ``model_dump(by_alias=True, exclude_unset=True)``. Two things
change on the way through, both to Qdrant's own form: ``must``/``should``/
``must_not`` (and ``min_should.conditions``) are always lists, even when the
client sent one condition (Qdrant's MaybeOneOrMany keeps an Option<Vec>), and
point ids in ``has_id`` are canonical. Everything else dumps as sent.

A condition is an untagged enum in Qdrant, so any misfit inside one answers
"data did not match any variant of untagged enum Condition".
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Optional

from pydantic import Field, PlainValidator, model_validator

from gateway.models.base import NESTED, QModel, schema_error
from gateway.models.serde import (
    F64,
    I64,
    Bool,
    ExtendedPointId,
    JsonPath,
    OneOrMany,
    Str,
    USize,
    Untagged,
    invalid_type,
    one_of,
    rust_display_float,
    serde_error,
)

# ---------------------------------------------------------------------------
# Match.
# ---------------------------------------------------------------------------

ValueVariants = Untagged("ValueVariants", Str, I64, Bool)
AnyVariants = Untagged("AnyVariants", list[Str], list[I64])


class MatchValue(QModel):
    value: ValueVariants


class MatchText(QModel):
    text: Str


class MatchPhrase(QModel):
    phrase: Str


class MatchAny(QModel):
    any: AnyVariants


class MatchExcept(QModel):
    except_: AnyVariants = Field(alias="except")


Match = Untagged("Match", MatchValue, MatchText, MatchPhrase, MatchAny, MatchExcept)

# ---------------------------------------------------------------------------
# Range.
# ---------------------------------------------------------------------------

# Qdrant's DateTimeWrapper accepts RFC 3339 and a few relaxed forms: a space
# instead of "T", no seconds fraction, no offset, or a bare date.
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)


def _datetime(value: Any) -> str:
    if type(value) is not str:
        raise serde_error(invalid_type(value, "a borrowed string"))
    ok = _DATETIME.fullmatch(value) is not None
    if ok:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
        except ValueError:
            ok = len(value) == 10 and value[4] == "-"
    if not ok:
        raise serde_error(f"'{value}' is not in a supported date/time format, please use RFC 3339", "custom")
    return value


DateTime = Annotated[str, PlainValidator(_datetime)]


class Range(QModel):
    lt: Optional[F64] = None
    gt: Optional[F64] = None
    gte: Optional[F64] = None
    lte: Optional[F64] = None


class DatetimeRange(QModel):
    lt: Optional[DateTime] = None
    gt: Optional[DateTime] = None
    gte: Optional[DateTime] = None
    lte: Optional[DateTime] = None


RangeInterface = Untagged("RangeInterface", Range, DatetimeRange)

# ---------------------------------------------------------------------------
# Geo.
# ---------------------------------------------------------------------------


class GeoPoint(QModel):
    lon: F64
    lat: F64

    @model_validator(mode="after")
    def _bounds(self):
        # Qdrant's GeoPoint refuses coordinates outside the globe while parsing
        # (GeoPoint::validate through serde's try_from).
        if not -180.0 <= self.lon <= 180.0:
            raise serde_error(
                "Validation failed: Wrong input: longitude must be between -180 and 180, "
                f"got {rust_display_float(float(self.lon))}",
                "custom",
            )
        if not -90.0 <= self.lat <= 90.0:
            raise serde_error(
                "Validation failed: Wrong input: latitude must be between -90 and 90, "
                f"got {rust_display_float(float(self.lat))}",
                "custom",
            )
        return self


class GeoBoundingBox(QModel):
    top_left: GeoPoint
    bottom_right: GeoPoint


class GeoRadius(QModel):
    center: GeoPoint
    radius: F64


class GeoLineString(QModel):
    points: list[GeoPoint]


def _line_error(line: GeoLineString) -> str | None:
    """Qdrant's polygon line rules (codes min_line_length / closed_line)."""
    points = line.points
    if len(points) < 4:
        return f"value invalid, the size must be at least 4, got {len(points)}"
    first, last = points[0], points[-1]
    if (first.lon, first.lat) != (last.lon, last.lat):
        return "value invalid, the first and the last points should be same to form a closed line"
    return None


class GeoPolygon(QModel):
    exterior: GeoLineString
    interiors: Optional[list[GeoLineString]] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        out = []
        if not self.exterior.points:
            out.append((f"{path}.exterior", "value invalid, must not be empty"))
        else:
            msg = _line_error(self.exterior)
            if msg:
                out.append((f"{path}.exterior", msg))
        for line in self.interiors or []:
            msg = _line_error(line)
            if msg:
                out.append((f"{path}.interiors", msg))
                break
        return out


class ValuesCount(QModel):
    lt: Optional[USize] = None
    gt: Optional[USize] = None
    gte: Optional[USize] = None
    lte: Optional[USize] = None


# ---------------------------------------------------------------------------
# Conditions.
# ---------------------------------------------------------------------------


class FieldCondition(QModel):
    key: JsonPath
    match: Optional[Match] = None
    range: Optional[RangeInterface] = None
    geo_bounding_box: Optional[GeoBoundingBox] = None
    geo_radius: Optional[GeoRadius] = None
    geo_polygon: Annotated[Optional[GeoPolygon], NESTED] = None
    values_count: Optional[ValuesCount] = None
    is_empty: Optional[Bool] = None
    is_null: Optional[Bool] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        # validate_field_condition, a struct-level (schema) rule: key "__all__".
        conditions = (
            self.match,
            self.range,
            self.geo_bounding_box,
            self.geo_radius,
            self.geo_polygon,
            self.values_count,
            self.is_empty,
            self.is_null,
        )
        if all(c is None for c in conditions):
            where = f"{path}.__all__" if path else "__all__"
            return [(where, schema_error("At least one field condition must be specified"))]
        return []


class PayloadField(QModel):
    key: JsonPath


class IsEmptyCondition(QModel):
    is_empty: PayloadField


class IsNullCondition(QModel):
    is_null: PayloadField


class HasIdCondition(QModel):
    has_id: list[ExtendedPointId]


class HasVectorCondition(QModel):
    has_vector: Str


class Nested(QModel):
    key: JsonPath
    filter: Annotated["Filter", NESTED]


class NestedCondition(QModel):
    nested: Annotated[Nested, NESTED]


Condition = Untagged(
    "Condition",
    FieldCondition,
    IsEmptyCondition,
    IsNullCondition,
    HasIdCondition,
    HasVectorCondition,
    NestedCondition,
    "Filter",
)

Conditions = Annotated[Optional[list[Condition]], OneOrMany, NESTED]


class MinShould(QModel):
    conditions: Annotated[list[Condition], NESTED]
    min_count: USize


_FILTER_FIELDS = ("should", "min_should", "must", "must_not")


class Filter(QModel):
    """Qdrant's Filter (``deny_unknown_fields``: a stray key is an error)."""

    should: Conditions = None
    min_should: Annotated[Optional[MinShould], NESTED] = None
    must: Conditions = None
    must_not: Conditions = None

    @model_validator(mode="before")
    @classmethod
    def _deny_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in _FILTER_FIELDS:
                    raise serde_error(f"unknown field `{key}`, expected {one_of(_FILTER_FIELDS)}", "key:" + key)
        return data


Nested.model_rebuild()
NestedCondition.model_rebuild()
MinShould.model_rebuild()
Filter.model_rebuild()
