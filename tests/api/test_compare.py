"""The comparison rules themselves: loose where Qdrant leaves freedom, strict elsewhere.

No server needed. If these pass, a mismatch reported by the API suites is a real
difference and not an artefact of the comparison.
"""

from __future__ import annotations

import pytest
from qdrant_client import models

from .compare import assert_records, assert_same, assert_scored, both_raise


def sp(pid, score, payload=None, vector=None):
    return models.ScoredPoint(id=pid, version=0, score=score, payload=payload, vector=vector)


def rec(pid, payload=None, vector=None, order_value=None):
    return models.Record(id=pid, payload=payload, vector=vector, order_value=order_value)


ORACLE = [sp(1, 0.9, {"a": 1}), sp(2, 0.8), sp(3, 0.8), sp(4, 0.7)]


def test_identical_and_float32_noise_pass():
    assert_scored(ORACLE, ORACLE, limit=4)
    assert_scored([sp(1, 0.90003, {"a": 1}), sp(2, 0.8), sp(3, 0.8), sp(4, 0.7)], ORACLE, limit=4)


def test_tied_scores_may_swap():
    assert_scored([sp(1, 0.9, {"a": 1}), sp(3, 0.8), sp(2, 0.8), sp(4, 0.7)], ORACLE, limit=4)


def test_tie_at_the_cut_may_name_another_point():
    oracle = [sp(1, 0.9), sp(2, 0.5)]
    assert_scored([sp(1, 0.9), sp(7, 0.5)], oracle, limit=2)
    with pytest.raises(AssertionError):  # not cut by limit: every point must be there
        assert_scored([sp(1, 0.9), sp(7, 0.5)], oracle, limit=5)


@pytest.mark.parametrize("bad", [
    [sp(1, 0.9, {"a": 1}), sp(2, 0.8), sp(4, 0.7), sp(3, 0.8)],   # wrong order
    [sp(1, 0.9, {"a": 1}), sp(2, 0.8), sp(3, 0.8)],               # one missing
    [sp(1, 0.9, {"a": 2}), sp(2, 0.8), sp(3, 0.8), sp(4, 0.7)],   # payload differs
    [sp(1, 0.9, {"a": True}), sp(2, 0.8), sp(3, 0.8), sp(4, 0.7)],  # bool is not int
    [sp(1, 0.9, {"a": 1}), sp(2, 0.8), sp(3, 0.8), sp(4, 0.71)],  # score off
    [sp(1, 0.9, {"a": 1}), sp(2, 0.8), sp(2, 0.8), sp(4, 0.7)],   # duplicate id
    [sp(1, 0.9, {"a": 1}), sp(2, 0.8), sp(5, 0.8), sp(4, 0.7)],   # foreign id
], ids=["order", "missing", "payload", "bool", "score", "duplicate", "foreign"])
def test_real_differences_fail(bad):
    with pytest.raises(AssertionError) as info:
        assert_scored(bad, ORACLE, limit=10)
    assert "Shoal differs from :memory:" in str(info.value)


def test_vectors_and_records():
    assert_records([rec(2, vector=[0.1, 0.2]), rec(1)], [rec(1), rec(2, vector=[0.1, 0.200001])])
    with pytest.raises(AssertionError):
        assert_records([rec(1, vector=[0.1, 0.2])], [rec(1, vector=[0.1, 0.2001])])
    with pytest.raises(AssertionError):
        assert_records([rec(2), rec(1)], [rec(1), rec(2)], ordered=True)
    with pytest.raises(AssertionError):
        assert_records([rec(1, vector={"a": [1.0]})], [rec(1, vector={"a": [1.0], "b": [2.0]})])


def test_order_value_ties():
    oracle = [rec(1, order_value=1), rec(2, order_value=2), rec(3, order_value=2)]
    assert_records([rec(1, order_value=1), rec(3, order_value=2), rec(2, order_value=2)],
                   oracle, ordered=True)
    with pytest.raises(AssertionError):
        assert_records([rec(2, order_value=2), rec(1, order_value=1), rec(3, order_value=2)],
                       oracle, ordered=True)


def test_uuid_case_and_generic_values():
    u = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    assert_scored([sp(u.upper(), 0.5)], [sp(u, 0.5)])
    assert_same({"count": 3}, {"count": 3})
    with pytest.raises(AssertionError):
        assert_same({"count": 3}, {"count": 4})


def test_both_raise():
    def boom(_):
        raise ValueError("no")

    assert len(both_raise(1, 2, boom)) == 2
    with pytest.raises(AssertionError):
        both_raise(1, 2, lambda c: c)
