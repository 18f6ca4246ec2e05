"""The spec the fuzz tests generate from: finite, and still Qdrant's.

Validation uses jsonschema-rs (a dependency of schemathesis). ``nullable`` is an
OpenAPI keyword it ignores, so the instances here hold no nulls.
"""

from __future__ import annotations

import jsonschema_rs
import pytest

from tests.fuzz.schema import (
    NEVER,
    REF_PREFIX,
    fuzz_spec,
    hoist_nullable,
    load_spec,
    reachable,
    recursion_anchors,
    refs_in,
    unroll,
)


def _spec(schemas: dict, root: str) -> dict:
    body = {"content": {"application/json": {"schema": {"$ref": REF_PREFIX + root}}}}
    return {"openapi": "3.0.1", "paths": {"/x": {"post": {"requestBody": body}}}, "components": {"schemas": schemas}}


def _valid(spec: dict, name: str, instance) -> bool:
    document = {"$ref": REF_PREFIX + name, "components": spec["components"]}
    return jsonschema_rs.validator_for(document).is_valid(instance)


def _has_cycle(spec: dict) -> bool:
    graph = {name: refs_in(schema) for name, schema in spec["components"]["schemas"].items()}
    return any(name in reachable(graph, name) for name in graph)


def _nested(depth: int, leaf: dict) -> dict:
    """A Filter holding filters ``depth`` levels deep (a Filter is a Condition)."""
    node = {"must": [leaf]}
    for _ in range(depth):
        node = {"must": [node]}
    return node


FIELD = {"key": "city", "match": {"value": "Berlin"}}


# ------------------------------------------------------------- small specs


TREE = {  # Node -> children: [Node]; Node -> parent: Node (optional)
    "Node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": REF_PREFIX + "Node"}},
        "parent": {"$ref": REF_PREFIX + "Node"},
        "name": {"type": "string"}}, "additionalProperties": False},
}


def test_unroll_bounds_the_nesting_to_the_depth():
    spec = unroll(_spec(TREE, "Node"), depth=2)
    assert not _has_cycle(spec)
    assert set(spec["components"]["schemas"]) == {"Node", "Node__1", "Node__2"}
    two_deep = {"children": [{"children": [{"name": "leaf"}]}]}
    assert _valid(spec, "Node", two_deep)
    assert not _valid(spec, "Node", {"children": [two_deep]})
    assert not _valid(spec, "Node", {"parent": {"parent": {"parent": {}}}})
    # The last level keeps what does not recurse.
    assert spec["components"]["schemas"]["Node__2"]["properties"] == {
        "children": {"type": "array", "maxItems": 0}, "name": {"type": "string"}}


def test_unroll_at_depth_zero_drops_all_recursion():
    spec = unroll(_spec(TREE, "Node"), depth=0)
    assert set(spec["components"]["schemas"]) == {"Node"}
    assert _valid(spec, "Node", {"name": "x", "children": []})
    assert not _valid(spec, "Node", {"children": [{}]})


def test_a_required_recursion_empties_its_users_and_a_union_drops_them():
    schemas = {
        "Expr": {"anyOf": [{"type": "number"}, {"$ref": REF_PREFIX + "Neg"}]},
        "Neg": {"type": "object", "required": ["neg"], "properties": {"neg": {"$ref": REF_PREFIX + "Expr"}}},
    }
    spec = unroll(_spec(schemas, "Expr"), depth=1)
    assert not _has_cycle(spec)
    assert _valid(spec, "Expr", {"neg": 1.5})
    assert not _valid(spec, "Expr", {"neg": {"neg": 1.5}})
    # Neg at the last level would need an Expr past the depth: it is gone, and
    # the last Expr is only its number branch.
    assert "Neg__1" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["Expr__1"] == {"anyOf": [{"type": "number"}]}


def test_unroll_says_so_when_nothing_valid_is_left():
    endless = {"Chain": {"type": "object", "required": ["next"], "properties": {"next": {"$ref": REF_PREFIX + "Chain"}}}}
    with pytest.raises(ValueError, match="Chain"):
        unroll(_spec(endless, "Chain"), depth=2)


def test_unroll_leaves_the_input_alone():
    spec = _spec(TREE, "Node")
    before = repr(spec)
    unroll(spec, depth=1)
    assert repr(spec) == before


def test_hoist_nullable_moves_the_null_branch_onto_the_union():
    schema = {"anyOf": [{"$ref": REF_PREFIX + "Filter"}, {"nullable": True}], "description": "d"}
    assert hoist_nullable(schema) == {"anyOf": [{"$ref": REF_PREFIX + "Filter"}], "description": "d", "nullable": True}
    assert hoist_nullable({"anyOf": [{"nullable": True}]}) == {"anyOf": [{"nullable": True}]}
    assert hoist_nullable([{"oneOf": [{"type": "integer"}, {"nullable": True}]}]) == [
        {"oneOf": [{"type": "integer"}], "nullable": True}]


# --------------------------------------------------------------- Qdrant's


@pytest.fixture(scope="module")
def qdrant():
    return fuzz_spec(depth=3)


def test_qdrant_spec_is_recursive_and_the_fuzz_spec_is_not(qdrant):
    assert _has_cycle(load_spec())
    assert not _has_cycle(qdrant)
    assert set(refs_in(qdrant)) <= set(qdrant["components"]["schemas"])
    assert NEVER not in [qdrant["components"]["schemas"][name] for name in qdrant["components"]["schemas"]]


def test_qdrant_anchors_are_the_schemas_requests_meet_first():
    spec = load_spec()
    graph = {name: refs_in(schema) for name, schema in spec["components"]["schemas"].items()}
    assert recursion_anchors(graph, roots=refs_in(spec["paths"])) == {"Filter", "Prefetch", "Expression"}


def test_qdrant_filters_nest_three_deep_and_no_deeper(qdrant):
    assert _valid(qdrant, "Filter", _nested(3, FIELD))
    assert not _valid(qdrant, "Filter", _nested(4, FIELD))
    nested_condition = {"nested": {"key": "n", "filter": {"must": [FIELD]}}}
    assert _valid(qdrant, "Filter", _nested(2, nested_condition))
    assert not _valid(qdrant, "Filter", _nested(3, nested_condition))
    # Schemas off the cycles are untouched.
    assert qdrant["components"]["schemas"]["FieldCondition"] == hoist_nullable(load_spec())["components"]["schemas"]["FieldCondition"]


def test_qdrant_prefetches_nest_three_deep(qdrant):
    prefetch = {"limit": 3}
    for _ in range(3):
        prefetch = {"prefetch": [prefetch], "limit": 3}
    assert _valid(qdrant, "Prefetch", prefetch)
    assert not _valid(qdrant, "Prefetch", {"prefetch": prefetch})


def test_schemathesis_generates_filters_from_the_fuzz_spec(qdrant):
    """The point of both rewrites: generated scroll requests carry filters."""
    import schemathesis
    from hypothesis import HealthCheck, given, seed, settings

    operation = schemathesis.openapi.from_dict(qdrant)["/collections/{collection_name}/points/scroll"]["POST"]
    bodies = []

    @settings(max_examples=60, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @seed(7)
    @given(operation.as_strategy())
    def collect(case):
        bodies.append(case.body)

    collect()
    assert any(isinstance(b, dict) and isinstance(b.get("filter"), dict) for b in bodies)
