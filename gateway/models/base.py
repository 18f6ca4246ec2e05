"""The base of every request model, and Qdrant's second check: ``validate``.

Qdrant reads a body in two steps. serde first turns JSON into Rust types (a
misfit is a 400 Format error); then the ``validator`` derive checks ranges and
lengths (a breach is a 422 "Validation error in JSON body: [path: message]").
The pydantic models here do step one; this module does step two by walking the
parsed model and reading markers that mirror Qdrant's ``#[validate(...)]``
attributes:

- ``Range(min, max)``   ``#[validate(range(...))]`` and Qdrant's hand-written range
  functions (the ``validator`` derive adds the value to those too): "value 0 invalid,
  must be 1 or larger" (Qdrant's tests/openapi/test_limits.py).
- ``Length(min, message)`` ``#[validate(length(...))]``.
- ``NESTED``            ``#[validate(nested)]``: descend into the field. Qdrant only
  validates what it marks nested, so neither do we.
- ``Prefix("name")``    a field that lives in a ``#[serde(flatten)]`` struct whose
  Rust field is ``name``; its path starts with ``name.`` (Qdrant prints
  ``internal.limit`` for QueryRequest's limit).
- a model's ``qdrant_checks(path)`` method for whole-struct rules.

Paths are Qdrant's: Rust field names joined by ``.``, ``[i]`` for list items,
``?`` for map values (its validate_iter helper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, RootModel

from gateway.models.serde import ryu

# Rust struct names by Python class name, for "expected struct X" messages.
RUST_NAMES: dict[str, str] = {}


class QModel(BaseModel):
    """A Qdrant request struct. Unknown keys are ignored, as serde ignores them
    (only structs with ``deny_unknown_fields`` reject them, see ``Filter``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, arbitrary_types_allowed=True)

    # The Rust struct this model mirrors ("struct X" in serde messages).
    __rust_name__: ClassVar[str | None] = None
    # Rust field of the flattened inner struct holding the request's fields
    # (``#[serde(flatten)] internal: QueryRequestInternal``); paths start with it.
    __flatten__: ClassVar[str | None] = None
    # Fields that sit beside the flattened struct rather than in it.
    __outer_fields__: ClassVar[frozenset[str]] = frozenset({"shard_key"})
    # How serde_json places errors for a body of this type: "stream" gives
    # "at line L column C"; "none" leaves it out (Qdrant's flattened requests and
    # the upsert body, which Qdrant deserialises through serde_json::Value);
    # "items" leaves it out inside the items of a batch of flattened requests.
    __serde_position__: ClassVar[str] = "stream"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        RUST_NAMES[cls.__name__] = cls.__rust_name__ or cls.__name__

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        """Whole-struct validation rules (``impl Validate`` by hand in Qdrant)."""
        return []


# ---------------------------------------------------------------------------
# Markers.
# ---------------------------------------------------------------------------


def json_value(value: Any, f32: bool = False) -> str:
    """serde_json's display of a validation parameter."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ryu(float(np.float32(value)) if f32 else value)
    return str(value)


@dataclass(frozen=True)
class Range:
    min: int | float | None = None
    max: int | float | None = None
    f32: bool = False

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        probe = float(np.float32(value)) if self.f32 and isinstance(value, float) else value
        if (self.min is None or probe >= self.min) and (self.max is None or probe <= self.max):
            return None
        if self.min is not None and self.max is None:
            msg = f"must be {json_value(self.min)} or larger"
        elif self.min is not None:
            msg = f"must be from {json_value(self.min)} to {json_value(self.max)}"
        else:
            msg = f"must be {json_value(self.max)} or smaller"
        return f"value {json_value(value, self.f32)} invalid, {msg}"


@dataclass(frozen=True)
class Length:
    min: int | None = None
    max: int | None = None
    message: str | None = None

    def check(self, value: Any) -> str | None:
        if value is None:
            return None
        n = len(value)
        if (self.min is None or n >= self.min) and (self.max is None or n <= self.max):
            return None
        if self.message:
            return self.message
        if self.max is None:
            return f"must be at least {self.min} characters"
        if self.min is None:
            return f"must be at most {self.max} characters"
        return f"must be from {self.min} to {self.max} characters"


@dataclass(frozen=True)
class Prefix:
    name: str


class _Nested:
    def __repr__(self) -> str:
        return "NESTED"


NESTED = _Nested()


def schema_error(code: str) -> str:
    """How Qdrant prints a ValidationError that has a code but no message
    (validator's Display): "Validation error: CODE [{}]"."""
    return f"Validation error: {code} [{{}}]"


# ---------------------------------------------------------------------------
# The walk.
# ---------------------------------------------------------------------------


def _field_plan(cls: type[BaseModel]) -> list[tuple[str, str, list, bool, str]]:
    """Per field that has rules or nested models: (attribute, rust name,
    range/length rules, nested?, prefix). The other fields have nothing to check."""
    cached = cls.__dict__.get("_qdrant_plan")
    if cached is not None:
        return cached
    plan = []
    flatten = getattr(cls, "__flatten__", None)
    outer = getattr(cls, "__outer_fields__", frozenset())
    for attr, info in cls.model_fields.items():
        rust = info.serialization_alias or info.alias or attr
        rules = [m for m in info.metadata if isinstance(m, (Range, Length))]
        nested = any(m is NESTED for m in info.metadata)
        prefix = ""
        if flatten and attr not in outer:
            prefix = flatten + "."
        for m in info.metadata:
            if isinstance(m, Prefix):
                prefix += m.name + "."
        if rules or nested:
            plan.append((attr, rust, rules, nested, prefix))
    cls._qdrant_plan = plan
    return plan


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _walk_value(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, BaseModel):
        _walk_model(value, path, out)
    elif isinstance(value, list):
        # Long lists of numbers (vectors) are skipped after one look.
        if len(value) > 64 and not isinstance(value[0], (BaseModel, list, dict)):
            return
        for i, item in enumerate(value):
            if isinstance(item, (BaseModel, list, dict)):
                _walk_value(item, f"{path}[{i}]", out)
    elif isinstance(value, dict):
        for item in value.values():
            if isinstance(item, (BaseModel, list, dict)):
                _walk_value(item, _join(path, "?"), out)


def _walk_model(model: BaseModel, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(model, RootModel):
        _walk_value(model.root, path, out)
        return
    for attr, rust, rules, nested, prefix in _field_plan(type(model)):
        value = getattr(model, attr)
        if value is None:
            continue
        field_path = _join(path, prefix + rust)
        for rule in rules:
            msg = rule.check(value)
            if msg is not None:
                out.append((field_path, msg))
        if nested:
            _walk_value(value, field_path, out)
    if isinstance(model, QModel):
        out.extend(model.qdrant_checks(path))


def qdrant_validate(model: BaseModel) -> list[tuple[str, str]]:
    """Qdrant's ``validate()`` of a parsed request: (path, message) pairs, in
    field order (Qdrant's own order follows a hash map and is not stable)."""
    out: list[tuple[str, str]] = []
    _walk_model(model, "", out)
    return out
