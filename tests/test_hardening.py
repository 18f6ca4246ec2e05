"""The rules that keep hostile input away from files, processes and the stack,
tested without a server: names (``cluster.names``), paths inside storage
(``shard.fileio.contained``), query parameters (``gateway.params``) and the
JSON nesting limit (``gateway.models.jsontext.too_deep``)."""

from __future__ import annotations

import json
import os
import shutil

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.names import is_incarnation, length_problem, name_problem, new_incarnation
from gateway.errors import FormatError, QueryDeserializeError, ValidationError
from gateway.models import jsontext
from gateway.models.parse import decode
from gateway.params import read_params, update_params, wait_timeout
from shard.fileio import OutsideRoot, contained, remove_tree

# ----------------------------------------------------------------------- names


@pytest.mark.parametrize("char", list('<>:"/\\|?*') + ["\0", "\x1f"])
def test_qdrant_forbidden_characters_are_refused_in_qdrant_words(char):
    assert name_problem(f"a{char}b") == f'collection name cannot contain "{char}" char'


@pytest.mark.parametrize("char", ["\x01", "\n", "\r", "\t", "\x7f", "\x85", "\x9f"])
def test_every_control_character_is_refused(char):
    assert name_problem(f"a{char}b") == f'collection name cannot contain "{char}" char'


def test_qdrant_names_its_first_forbidden_char_in_its_own_order():
    # Qdrant walks its list (< before /), not the name.
    assert name_problem("a/b<c") == 'collection name cannot contain "<" char'


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_names_are_refused(name):
    assert name_problem(name) == f'collection name cannot be "{name}"'


def test_lengths_count_characters_not_bytes():
    assert name_problem("é" * 255) is None  # 510 bytes, 255 characters
    assert name_problem("é" * 256) == "must be from 1 to 255 characters"
    assert name_problem("") == "must be from 1 to 255 characters"
    assert length_problem("a/b") is None  # other routes check the length only, as Qdrant


@pytest.mark.parametrize("name", ["my_collection", "docs-v2", "Ünïcode ok", "a.b", "...", "x" * 255, "with space"])
def test_ordinary_names_pass(name):
    assert name_problem(name) is None


def test_incarnations_are_recognised_and_nothing_else():
    fresh = new_incarnation()
    assert is_incarnation(fresh) and fresh != new_incarnation()
    for bad in ["..", "../" + fresh, fresh.upper(), fresh[:-1], fresh + "0", None, 7, "g" * 32]:
        assert not is_incarnation(bad), bad


# ----------------------------------------------------------------------- paths


def test_contained_accepts_paths_inside_and_refuses_escapes(tmp_path):
    root = tmp_path / "storage"
    (root / "collections").mkdir(parents=True)
    assert contained(root, root / "collections" / "x") == (root / "collections" / "x").resolve()
    for escape in [root, root / "..", root / "collections" / ".." / "..", tmp_path / "elsewhere",
                   root / "collections" / ".." / ".." / "victim"]:
        with pytest.raises(OutsideRoot):
            contained(root, escape)


def test_contained_follows_links_before_judging(tmp_path):
    root = tmp_path / "storage"
    root.mkdir()
    outside = tmp_path / "victim"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(OutsideRoot):
        contained(root, root / "link")


def test_remove_tree_deletes_nothing_outside_its_root(tmp_path):
    root = tmp_path / "storage"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_text("x")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("not ours")
    (root / "link").symlink_to(victim)
    for target in [root / "..", root / "link", victim, root]:
        with pytest.raises(OutsideRoot):
            remove_tree(root, target)
    assert (victim / "keep").read_text() == "not ours" and (root / "a" / "f").exists()
    # A link inside a removed tree is removed, not followed.
    (root / "a" / "inner").symlink_to(victim)
    assert remove_tree(root, root / "a") is True
    assert not (root / "a").exists() and (victim / "keep").exists()
    assert remove_tree(root, root / "a") is False


def test_remove_tree_finishes_when_another_deleter_removes_parts_meanwhile(tmp_path, monkeypatch):
    """A replica's actor and its collection's gateway may delete one folder at once:
    what the other removed first is gone as wanted, not an error."""
    root = tmp_path / "storage"
    (root / "shard" / "wal").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (root / "shard" / "wal" / name).write_text("x")
    real_unlink, raced = os.unlink, []

    def unlink(path, *args, **kwargs):
        if not raced:  # the other deleter takes the whole folder first
            raced.append(path)
            shutil.rmtree(root / "shard" / "wal")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    assert remove_tree(root, root / "shard") is True
    assert raced and not (root / "shard").exists()


# ---------------------------------------------------------------- query params


def _request(query: str):
    return make_mocked_request("POST", "/collections/c/points/search" + (f"?{query}" if query else ""))


@pytest.mark.parametrize("query, wait, ordering", [
    ("", False, "weak"), ("wait=true", True, "weak"), ("wait=false", False, "weak"),
    ("ordering=strong&wait=true", True, "strong"), ("unknown=1", False, "weak"),
])
def test_update_params_read_what_qdrant_reads(query, wait, ordering):
    params = update_params(_request(query))
    assert (params.wait, params.ordering) == (wait, ordering)


@pytest.mark.parametrize("query, message", [
    ("wait=maybe", "provided string was not `true` or `false`"),
    ("wait=1", "provided string was not `true` or `false`"),  # Rust's bool parse: true/false only
    ("wait=True", "provided string was not `true` or `false`"),
    ("wait=", "provided string was not `true` or `false`"),
    ("wait=true&wait=false", "duplicate field `wait`"),
    ("ordering=fast", "unknown variant `fast`, expected one of `weak`, `medium`, `strong`"),
])
def test_bad_update_params_are_deserialize_errors(query, message):
    with pytest.raises(QueryDeserializeError) as err:
        update_params(_request(query))
    assert err.value.status == 400
    assert err.value.text == "Deserialize error in query parameters: " + message


@pytest.mark.parametrize("query, consistency, timeout", [
    ("", None, None), ("consistency=", None, None), ("consistency=majority", "majority", None),
    ("consistency=all&timeout=5", "all", 5), ("consistency=3", 3, None), ("timeout=%2B7", None, 7),
])
def test_read_params_read_what_qdrant_reads(query, consistency, timeout):
    params = read_params(_request(query))
    assert (params.consistency, params.timeout) == (consistency, timeout)


@pytest.mark.parametrize("query, message", [
    ("consistency=J", "failed to deserialize read consistency query parameter value"),
    ("consistency=0", "failed to deserialize read consistency query parameter value"),
    ("consistency=-1", "failed to deserialize read consistency query parameter value"),
    ("consistency=36893488147419103233", "failed to deserialize read consistency query parameter value"),  # > usize
    ("timeout=-5", "invalid digit found in string"),
    ("timeout=abc", "invalid digit found in string"),
    ("timeout=1.5", "invalid digit found in string"),
    ("timeout=", "cannot parse integer from empty string"),
    ("timeout=0", "invalid value: integer `0`, expected a nonzero u64"),
    ("timeout=99999999999999999999", "number too large to fit in target type"),
    ("timeout=%C2%B2", "invalid digit found in string"),  # a Unicode digit is not an ASCII one
])
def test_bad_read_params_are_deserialize_errors(query, message):
    with pytest.raises(QueryDeserializeError) as err:
        read_params(_request(query))
    assert err.value.text == "Deserialize error in query parameters: " + message


def test_collection_change_timeout_is_validated_like_qdrant():
    assert wait_timeout(_request("")) is None and wait_timeout(_request("timeout=3")) == 3
    with pytest.raises(ValidationError) as err:
        wait_timeout(_request("timeout=0"))
    assert err.value.status == 422
    assert err.value.text == "Validation error in query parameters: [timeout: value 0 invalid, must be 1 or larger]"
    with pytest.raises(QueryDeserializeError):
        wait_timeout(_request("timeout=soon"))


# --------------------------------------------------------------- JSON nesting


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_serde_recursion_limit_is_kept_exactly():
    decode(_nested(127))
    with pytest.raises(FormatError) as err:
        decode(_nested(128))
    assert err.value.text == "Format error in JSON body: recursion limit exceeded at line 1 column 128"


def test_a_deep_filter_is_a_format_error_not_a_crash():
    condition = b'{"key": "a", "match": {"value": 1}}'
    for _ in range(250):  # 500 levels of JSON: more than orjson itself will write
        condition = b'{"must": [' + condition + b"]}"
    body = b'{"vector": [1.0, 2.0, 3.0], "limit": 3, "filter": ' + condition + b"}"
    assert isinstance(orjson.loads(body), dict)  # orjson alone reads it
    with pytest.raises(FormatError) as err:
        decode(body)
    assert "recursion limit exceeded" in err.value.text


def test_brackets_inside_strings_neither_hide_nor_fake_depth():
    hiding = orjson.dumps({"s": "]" * 500, "deep": json.loads(_nested(130))})
    assert jsontext.too_deep(hiding)
    faking = orjson.dumps({"s": "[" * 500 + '\\"' + "{" * 200})
    assert not jsontext.too_deep(faking)


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.integers(-1000, 1000) | st.text(alphabet='[]{}"\\ab', max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=30),
       st.integers(min_value=110, max_value=135))
def test_too_deep_agrees_with_a_plain_walk(value, wrap):
    def depth(v) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    body = b"[" * wrap + orjson.dumps(value) + b"]" * wrap
    assert jsontext.too_deep(body) == (wrap + depth(value) >= 128)
