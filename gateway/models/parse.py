"""``parse(model, body)``: JSON bytes to a validated request model, failing
exactly where and how Qdrant fails.

1. orjson reads the bytes (fast; refuses NaN/Infinity as serde_json does). On a
   syntax error, ``jsontext.syntax_error`` words it as serde_json would.
2. pydantic checks types and structure: a misfit is a ``FormatError`` (400)
   with serde's message for the error serde would meet first (document order),
   placed "at line L column C" as serde_json places it -- except for the
   requests Qdrant reads through a flattened struct or a serde_json::Value
   (``__serde_position__ = "none"``), whose errors Qdrant reports without a
   position (observed on 1.15.1: "Format error in JSON body: Expected some form
   of vector, id, or a type of query"); batches of such requests ("items") lose
   the position inside their items only.
3. Qdrant's validate rules (``base.qdrant_validate``): a breach is a
   ``ValidationError`` (422) listing every broken rule.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import RootModel
from pydantic import ValidationError as PydanticValidationError

from gateway.errors import FormatError, ValidationError
from gateway.models import jsontext
from gateway.models.base import RUST_NAMES, qdrant_validate
from gateway.models.serde import invalid_type

_EXPECTED = {
    "float_type": "f32",
    "float_parsing": "f32",
    "finite_number": "f32",
    "list_type": "a sequence",
    "tuple_type": "a sequence",
    "dict_type": "a map",
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "i64",
    "int_parsing": "i64",
}


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def decode(body: bytes) -> Any:
    """The JSON value of ``body``, or FormatError with serde_json's message.
    Bodies nested deeper than serde_json's recursion limit are refused as
    Qdrant refuses them, although orjson reads them."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        message = jsontext.syntax_error(bytes(body))
        if message is not None:
            raise FormatError(message) from None
    else:
        if jsontext.too_deep(body):
            raise FormatError(jsontext.syntax_error(bytes(body)) or "recursion limit exceeded")
        return data
    # orjson refused text that serde_json reads (rare): read it the slow way.
    try:
        return json.loads(bytes(body), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise FormatError(jsontext.at("expected value", bytes(body), 1)) from None


def _describe(error: dict) -> tuple[str, str, tuple]:
    """(serde message, how serde places it, loc of the value concerned)."""
    kind = error["type"]
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if kind == "serde":
        return ctx.get("m", error["msg"]), ctx.get("k", "custom"), loc
    if kind == "missing":
        return f"missing field `{loc[-1]}`", "missing", loc[:-1]
    if kind in ("model_type", "model_attributes_type"):
        name = RUST_NAMES.get(ctx.get("class_name", ""), ctx.get("class_name", ""))
        return invalid_type(error.get("input"), f"struct {name}"), "value", loc
    if kind in _EXPECTED:
        return invalid_type(error.get("input"), _EXPECTED[kind]), "value", loc
    return error["msg"], "custom", loc


def _order(body: bytes, kind: str, loc: tuple) -> int:
    """Where serde meets this error while reading the body, to pick the first."""
    span = jsontext.locate(body, loc)
    if span is None:
        return len(body)
    start, end, _ = span
    if kind in ("missing", "struct"):
        return end
    return start


def _index(body: bytes, kind: str, loc: tuple) -> int | None:
    """The byte index serde_json reports for this error, or None for none."""
    span = jsontext.locate(body, loc)
    if span is None:
        return None
    start, end, container = span
    if kind == "value":
        return start if body[start : start + 1] in (b"{", b"[") else end
    if kind == "missing":
        return end
    if kind.startswith("key:"):
        return jsontext.key_end(body, start, kind[4:])
    if kind == "custom" and loc:
        return jsontext.after_value(body, end, container)
    return None


def serde_message(model_cls: type, body: bytes, errors: list[dict]) -> str:
    """The message Qdrant gives for a body that does not deserialize."""
    best = None
    for i, error in enumerate(errors):
        message, kind, loc = _describe(error)
        key = (_order(body, kind, loc), i)
        if best is None or key < best[0]:
            best = (key, message, kind, loc)
    _, message, kind, loc = best
    mode = getattr(model_cls, "__serde_position__", "stream")
    if mode == "none" or (mode == "items" and len(loc) >= 2):
        return message
    index = _index(body, kind, loc)
    return message if index is None else jsontext.at(message, body, index)


def parse(model_cls: type, body: bytes) -> Any:
    """Parse and validate a request body as Qdrant would.

    Returns the model instance (for ``PointInsertOperations`` and
    ``PointsSelector``, the variant: PointsList/PointsBatch,
    PointIdsList/FilterSelector). Raises ``FormatError`` (400) or
    ``ValidationError`` (422) from ``gateway.errors``.
    """
    return validated(model_cls, decode(body), body)


def validated(model_cls: type, data: Any, body: bytes) -> Any:
    """``parse`` of a body already decoded to ``data``."""
    try:
        model = model_cls.model_validate(data)
    except PydanticValidationError as exc:
        raise FormatError(serde_message(model_cls, bytes(body), exc.errors(include_url=False))) from None
    if isinstance(model, RootModel):
        model = model.root
    errors = qdrant_validate(model)
    if errors:
        raise ValidationError(errors)
    return model
