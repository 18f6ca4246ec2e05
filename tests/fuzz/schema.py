"""Qdrant's OpenAPI spec, made finite for a test-data generator.

Qdrant's filter schemas refer to themselves (Filter -> Condition -> Filter,
Condition -> NestedCondition -> Nested -> Filter, Prefetch -> Prefetch, the
formula Expressions ...). A generator walking them may never stop, so
``unroll`` rewrites every such cycle into ``depth + 1`` numbered copies
(``Filter``, ``Filter__1``, ... ``Filter__<depth>``) that each point one level
down, and cuts the references past the last level.

Cutting a reference must leave a schema that still describes valid data, so a
cut reference becomes "no value is allowed here" and that is pruned away the
way JSON Schema reads it: a branch of ``anyOf``/``oneOf`` that allows nothing
is dropped, an array whose items allow nothing must be empty, an optional
property that allows nothing is left out, and an object whose *required*
property allows nothing allows nothing itself (and so on up). What is left is
finite: at depth 3 a Filter holds filters nested 3 levels deep and no deeper.

Only the recursive schemas are copied; every other ``$ref`` stays a reference,
so the spec grows by ``depth`` copies of about 25 schemas and not by a factor.

``hoist_nullable`` fixes a second thing a generator trips on: Qdrant's spec
(written by schemars) spells every optional reference
``{"anyOf": [{"$ref": ...}, {"nullable": true}]}``, and schemathesis (4.32)
never generates a property written so: ``filter``, ``with_payload``, ``offset``
... would never be sent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# shared/ lies beside the repository (see the project's README).
SPEC_PATH = REPO_ROOT.parent / "shared" / "schemas" / "qdrant-v1.15.5" / "openapi.json"
REF_PREFIX = "#/components/schemas/"
NEVER: dict[str, Any] = {"not": {}}  # the schema no value satisfies


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def refs_in(node: Any) -> list[str]:
    """Names of the component schemas that ``node`` refers to (at any depth), each
    once, in document order."""
    found: dict[str, None] = {}

    def visit(item: Any) -> None:
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF_PREFIX):
                found[ref[len(REF_PREFIX):]] = None
            for value in item.values():
                visit(value)
        elif isinstance(item, list):
            for value in item:
                visit(value)

    visit(node)
    return list(found)


def reachable(graph: dict[str, list[str]], start: str) -> set[str]:
    """Every schema reachable from ``start`` through one or more references."""
    seen: set[str] = set()
    stack = list(graph.get(start, ()))
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(graph.get(name, ()))
    return seen


def recursion_anchors(graph: dict[str, list[str]], roots: list[str] = ()) -> set[str]:
    """Schemas where a cycle of references comes back to where it started.

    They are the targets of the back edges of a depth-first walk that starts
    from ``roots`` (then from every schema, in name order). Every cycle passes
    through one, so counting how often a chain of references enters an anchor
    bounds it. Starting from the schemas the API's operations use makes the
    anchor the schema a request meets first: Filter, not Condition.
    """
    anchors: set[str] = set()
    done: set[str] = set()
    on_path: set[str] = set()

    def walk(name: str) -> None:
        on_path.add(name)
        for target in graph.get(name, ()):
            if target in on_path:
                anchors.add(target)
            elif target not in done:
                walk(target)
        on_path.discard(name)
        done.add(name)

    for name in [*roots, *sorted(graph)]:
        if name not in done:
            walk(name)
    return anchors


def level_name(name: str, level: int) -> str:
    """Level 0 keeps the original name, so every reference from outside still works."""
    return name if level == 0 else f"{name}__{level}"


def _retarget(node: Any, target: Any) -> Any:
    """A copy of ``node`` with each ``$ref`` replaced by ``target(name)`` (a schema)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            return target(ref[len(REF_PREFIX):])
        return {key: _retarget(value, target) for key, value in node.items()}
    if isinstance(node, list):
        return [_retarget(item, target) for item in node]
    return node


def prune(schema: Any, never: set[str]) -> Any:
    """``schema`` without the parts that refer to ``NEVER`` or to a schema named in
    ``never``; ``NEVER`` itself when nothing valid is left (see the module's rules)."""
    if not isinstance(schema, dict):
        return schema
    if schema == NEVER or schema.get("$ref", "").removeprefix(REF_PREFIX) in never:
        return NEVER
    out = dict(schema)
    for key in ("anyOf", "oneOf"):
        if key in out:
            branches = [prune(branch, never) for branch in out[key]]
            out[key] = [branch for branch in branches if branch != NEVER]
            if not out[key]:
                return NEVER
    if "allOf" in out:
        out["allOf"] = [prune(part, never) for part in out["allOf"]]
        if NEVER in out["allOf"]:
            return NEVER
    if "properties" in out:
        properties = {}
        for name, sub in out["properties"].items():
            sub = prune(sub, never)
            if sub == NEVER:
                if name in out.get("required", ()):
                    return NEVER
                continue
            properties[name] = sub
        out["properties"] = properties
    if isinstance(out.get("items"), dict):
        items = prune(out["items"], never)
        if items == NEVER:
            if out.get("minItems", 0) > 0:
                return NEVER
            del out["items"]
            out["maxItems"] = 0
        else:
            out["items"] = items
    if isinstance(out.get("additionalProperties"), dict):
        extra = prune(out["additionalProperties"], never)
        out["additionalProperties"] = False if extra == NEVER else extra
    return out


def hoist_nullable(node: Any) -> Any:
    """A copy of ``node`` where an ``anyOf``/``oneOf`` branch that is only
    ``{"nullable": true}`` becomes ``nullable: true`` on the union itself: the
    OpenAPI 3.0 spelling of "one of these, or null", which is what schemars meant."""
    if isinstance(node, list):
        return [hoist_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: hoist_nullable(value) for key, value in node.items()}
    for key in ("anyOf", "oneOf"):
        branches = out.get(key)
        if isinstance(branches, list):
            kept = [branch for branch in branches if branch != {"nullable": True}]
            if kept and len(kept) < len(branches):
                out[key] = kept
                out["nullable"] = True
    return out


def fuzz_spec(depth: int = 3, path: Path = SPEC_PATH) -> dict[str, Any]:
    """Qdrant's spec as the fuzz tests generate from it: nullable unions hoisted,
    recursion unrolled to ``depth``."""
    return unroll(hoist_nullable(load_spec(path)), depth)


def unroll(spec: dict[str, Any], depth: int = 3) -> dict[str, Any]:
    """A copy of ``spec`` in which no component schema reaches itself through ``$ref``.

    Each schema on a cycle gets copies at levels 0..``depth``; inside a copy at
    level k a reference to a schema of the same cycle points to level k, or to
    level k + 1 when it enters an anchor (``recursion_anchors``); past ``depth``
    it is cut and pruned. So each recursive schema nests at most ``depth`` times
    inside itself. Raises ValueError if something the paths use is left empty.
    """
    if depth < 0:
        raise ValueError("depth must be >= 0")
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    graph = {name: refs_in(schema) for name, schema in schemas.items()}
    reach = {name: reachable(graph, name) for name in graph}
    cyclic = {name for name in graph if name in reach[name]}
    anchors = recursion_anchors(graph, roots=refs_in(spec.get("paths", {})))

    def copy_at(name: str, level: int) -> Any:
        def target(ref: str) -> dict[str, Any]:
            same_cycle = ref in cyclic and name in reach[ref] and ref in reach[name]
            if not same_cycle:
                return {"$ref": REF_PREFIX + ref}
            next_level = level + 1 if ref in anchors else level
            if next_level > depth:
                return NEVER
            return {"$ref": REF_PREFIX + level_name(ref, next_level)}

        return _retarget(schemas[name], target)

    unrolled = {}
    for name, schema in schemas.items():
        if name not in cyclic:
            unrolled[name] = schema
            continue
        for level in range(depth + 1):
            unrolled[level_name(name, level)] = copy_at(name, level)

    # A cut can empty a schema whose users must then be pruned too: repeat until stable.
    never: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name in [n for n in unrolled if n not in never]:
            unrolled[name] = prune(unrolled[name], never)
            if unrolled[name] == NEVER:
                never.add(name)
                changed = True
    for name in never:
        del unrolled[name]
    spec["components"]["schemas"] = unrolled
    dangling = set(refs_in(spec)) - set(unrolled)
    if dangling:
        raise ValueError(f"nothing valid is left of {sorted(dangling)} at depth {depth}")
    return spec
