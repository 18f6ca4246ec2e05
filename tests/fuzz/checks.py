"""What every fuzzed request is judged by: pure functions of what was sent and
what came back, so each can be shown to fail on a made-up bad answer
(tests/fuzz/test_checks.py) without a server.

Each check returns a list of problems (short texts); an empty list is a pass.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fuzz.schema import REF_PREFIX

U64_MAX = 2**64 - 1


# ---------------------------------------------------------------- the answer


def response_problems(status: int, content_type: str | None, body: bytes) -> list[str]:
    """No 5xx; every 4xx in Qdrant's error shape ``{"status": {"error": TEXT},
    "time": FLOAT}`` with a JSON content type. The one exception is Qdrant's
    unknown-route / wrong-method 404, which has an empty body (actix's default
    service; Shoal answers the same)."""
    if status >= 500:
        return [f"server error {status}"]
    if status < 400:
        return []
    if status == 404 and not body:
        return []
    problems = []
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        problems.append(f"error {status} has content type {content_type!r}, not application/json")
    try:
        parsed = json.loads(body)
    except ValueError:
        return problems + [f"error {status} body is not JSON"]
    if not isinstance(parsed, dict) or set(parsed) != {"status", "time"}:
        keys = sorted(parsed) if isinstance(parsed, dict) else type(parsed).__name__
        return problems + [f"error {status} body has keys {keys}, not ['status', 'time']"]
    if not (isinstance(parsed["status"], dict) and set(parsed["status"]) == {"error"}
            and isinstance(parsed["status"]["error"], str)):
        problems.append(f"error {status} body's status is not {{\"error\": <text>}}")
    if not isinstance(parsed["time"], float) or not math.isfinite(parsed["time"]):
        problems.append(f"error {status} body's time is not a float")
    return problems


def error_text(body: bytes) -> str:
    """The error text of an error answer, or the body's start if it has none."""
    try:
        parsed = json.loads(body)
        return str(parsed["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")


# ------------------------------------------------------- query parameters


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"][len(REF_PREFIX):]]
    return schema


def query_value_valid(schema: dict[str, Any], raw: str, components: dict[str, Any]) -> bool:
    """Whether Qdrant's query extractor (serde_urlencoded) takes ``raw`` for a
    parameter of this schema: booleans are exactly ``true``/``false``, integers are
    digits within u64 and the schema's minimum, enums name one of their values."""
    schema = _resolve(schema, components)
    if "anyOf" in schema:
        return any(query_value_valid(branch, raw, components) for branch in schema["anyOf"])
    if "enum" in schema:
        return raw in schema["enum"]
    kind = schema.get("type")
    if kind == "boolean":
        return raw in ("true", "false")
    if kind == "integer":
        if not re.fullmatch(r"[-+]?[0-9]+", raw):  # Rust's integer parse takes a leading +
            return False
        value = int(raw)
        return schema.get("minimum", -U64_MAX) <= value <= U64_MAX
    return True


def invalid_query_parameters(url: str, parameters: list[dict[str, Any]], components: dict[str, Any]) -> list[str]:
    """The documented query parameters of ``url`` that Qdrant would reject: a
    value its schema does not take, or a parameter given twice (serde's
    "duplicate field"). Parameters the operation does not document are ignored,
    as Qdrant ignores them."""
    sent = parse_qs(urlsplit(url).query, keep_blank_values=True)
    problems = []
    for parameter in parameters:
        if parameter.get("in") != "query" or parameter["name"] not in sent:
            continue
        values = sent[parameter["name"]]
        if parameter["name"] == "consistency" and values == [""]:
            continue  # Qdrant reads an empty consistency as "not given" (read_params.rs)
        if len(values) > 1:
            problems.append(f"query parameter {parameter['name']} given {len(values)} times")
        elif not query_value_valid(parameter["schema"], values[0], components):
            problems.append(f"query parameter {parameter['name']}={values[0]!r} is invalid")
    return problems


# -------------------------------------------------------- the seeded data


def state_differences(expected: dict[Any, dict[str, Any]], found: dict[Any, dict[str, Any]]) -> list[str]:
    """How the points ``found`` (id -> {"vector", "payload"}) differ from ``expected``.
    Both are read back from the server, so floats compare exactly."""
    problems = []
    for point_id in sorted(set(expected) - set(found), key=str):
        problems.append(f"point {point_id!r} is gone")
    for point_id in sorted(set(found) - set(expected), key=str):
        problems.append(f"point {point_id!r} appeared")
    for point_id in sorted(set(expected) & set(found), key=str):
        for part in ("vector", "payload"):
            if expected[point_id].get(part) != found[point_id].get(part):
                problems.append(f"point {point_id!r} {part} {expected[point_id].get(part)!r} "
                                f"-> {found[point_id].get(part)!r}")
    return problems


# ------------------------------------------------------------ what to send


def unsafe_to_send(path_parameters: dict[str, Any], body: Any, max_shards: int) -> str | None:
    """Why a generated request must not reach the server, or None.

    Names that could leave the storage folder (``..``, ``../..``) are refused by
    Shoal, but a regression would let a generated delete remove folders outside
    the server's storage on a machine other work shares: such names are left to
    targeted tests (tests/api/test_hardening_api.py), which watch the folders
    around the storage. And each shard is a Ray actor process: a random
    ``shard_number`` far below the server's limit still starts many processes.
    """
    name = path_parameters.get("collection_name")
    if isinstance(name, str):
        decoded = unquote(name)
        if decoded in (".", "..") or any(c in decoded for c in "/\\"):
            return f"collection name {decoded!r} could leave the storage folder"
    if isinstance(body, dict):
        shards = body.get("shard_number")
        if isinstance(shards, (int, float)) and not isinstance(shards, bool) and shards > max_shards:
            return f"shard_number {shards} would start too many actors"
    return None
