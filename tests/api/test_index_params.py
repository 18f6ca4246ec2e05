"""Payload index parameters (``is_tenant``, ``is_principal``, ``on_disk``, integer's
``lookup``/``range``, text's tokenizer options, ``stopwords`` and ``stemmer``): accepted,
kept with the index (through a snapshot and a crash) and reported in ``payload_schema``
exactly as Qdrant 1.15's serde writes them (lib/segment/src/data_types/index.rs:
integer's ``lookup``/``range``/``is_principal`` and float's and datetime's
``is_principal`` are written as null when unset; every other unset field is left out).

They change no answer here: Shoal keeps every index in memory (``on_disk`` is stored and
reported only) and has no tenant- or principal-ordered storage; the text fields are not
filtered on (what stopwords and stemmers do to answers: test_text_analysis.py).
``QdrantClient(":memory:")`` has no payload indexes at all (its ``payload_schema`` stays
empty), so it is the oracle for the answers only; the server's report is checked against
Qdrant's serde rules.
"""

from __future__ import annotations

import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.api.compare import assert_same, assert_scored
from tests.api.rawhttp import call, error_text
from tests.api.snapshotting import download, upload

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

N = 60
TENANT = "550e8400-e29b-41d4-a716-4466554400{:02d}"

# field -> (the schema sent through qdrant-client, the params Qdrant reports for it)
SCHEMAS = {
    "tenant": (models.KeywordIndexParams(type="keyword", is_tenant=True, on_disk=True),
               {"type": "keyword", "is_tenant": True, "on_disk": True}),
    "n": (models.IntegerIndexParams(type="integer", lookup=True, range=True, is_principal=True, on_disk=True),
          {"type": "integer", "lookup": True, "range": True, "is_principal": True, "on_disk": True}),
    "price": (models.FloatIndexParams(type="float", is_principal=True, on_disk=False),
              {"type": "float", "is_principal": True, "on_disk": False}),
    "at": (models.DatetimeIndexParams(type="datetime", is_principal=True, on_disk=True),
           {"type": "datetime", "is_principal": True, "on_disk": True}),
    "owner": (models.UuidIndexParams(type="uuid", is_tenant=True, on_disk=True),
              {"type": "uuid", "is_tenant": True, "on_disk": True}),
    "flag": (models.BoolIndexParams(type="bool", on_disk=True), {"type": "bool", "on_disk": True}),
    "where": (models.GeoIndexParams(type="geo", on_disk=True), {"type": "geo", "on_disk": True}),
    "body_typed": (models.TextIndexParams(
        type="text", tokenizer=models.TokenizerType.PREFIX, min_token_len=2, max_token_len=10, lowercase=True,
        stopwords=models.Language.ENGLISH,
        stemmer=models.SnowballParams(type=models.Snowball.SNOWBALL, language=models.SnowballLanguage.ENGLISH)),
        {"type": "text", "tokenizer": "prefix", "min_token_len": 2, "max_token_len": 10, "lowercase": True,
         "stopwords": "english", "stemmer": {"type": "snowball", "language": "english"}}),
}
# Sent as raw JSON with fields left out: how Qdrant reports what was not given.
RAW_SCHEMAS = {
    "n_disk": ({"type": "integer", "on_disk": True},
               {"type": "integer", "lookup": None, "range": None, "is_principal": None, "on_disk": True}),
    "price_plain": ({"type": "float"}, {"type": "float", "is_principal": None}),
    "tenant_only": ({"type": "keyword", "is_tenant": False}, {"type": "keyword", "is_tenant": False}),
    "body": ({"type": "text", "on_disk": True}, {"type": "text", "tokenizer": "word", "on_disk": True}),
    # Stopword languages and custom words are BTreeSets in Qdrant (sorted, no repeats);
    # language codes are serde aliases of the language they name.
    "body_en": ({"type": "text", "phrase_matching": True, "stemmer": {"type": "snowball", "language": "en"},
                 "stopwords": {"languages": ["en", "german", "english"], "custom": ["b", "a", "b"]}},
                {"type": "text", "tokenizer": "word", "phrase_matching": True,
                 "stopwords": {"languages": ["english", "german"], "custom": ["a", "b"]},
                 "stemmer": {"type": "snowball", "language": "english"}}),
}


@pytest.fixture
def server(shoal_server):
    if shoal_server is None:
        pytest.skip("payload_schema and restarts need a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    shoal_server.ensure_up()
    return shoal_server


def _points() -> list[models.PointStruct]:
    return [models.PointStruct(id=i, vector=[1.0, float(i % 7), float(i % 5), 0.5], payload={
        "tenant": f"t{i % 4}", "n": i, "n_disk": i, "price": i / 4, "price_plain": i / 3,
        "tenant_only": f"x{i % 2}", "at": f"2024-01-{1 + i % 28:02d}T00:00:00Z", "owner": TENANT.format(i % 3),
        "flag": i % 2 == 0, "where": {"lat": 50.0 + i / 100, "lon": 10.0}, "body": f"word{i % 5} common",
        "body_typed": f"the word{i % 5}", "body_en": f"word{i % 5} common",
    }) for i in range(N)]


def _expected() -> dict:
    """The payload_schema Qdrant reports for this data (every point has every field)."""
    reported = {field: params for field, (_, params) in (SCHEMAS | RAW_SCHEMAS).items()}
    return {field: {"data_type": params["type"], "params": params, "points": N} for field, params in reported.items()}


def _make(server, shoal, name: str, shards: int) -> None:
    shoal.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                            shard_number=shards)
    shoal.upsert(name, points=_points(), wait=True)
    for field, (schema, _) in SCHEMAS.items():
        assert shoal.create_payload_index(name, field, field_schema=schema, wait=True).status == "completed"
    for field, (schema, _) in RAW_SCHEMAS.items():
        status, body = call("PUT", f"{server.url}/collections/{name}/index?wait=true",
                            {"field_name": field, "field_schema": schema})
        assert status == 200, body


def _schema(server, name: str) -> dict:
    status, body = call("GET", f"{server.url}/collections/{name}")
    assert status == 200, body
    return body["result"]["payload_schema"]


def test_params_are_accepted_and_reported_as_qdrant_does(server, shoal, memory, collection_names):
    name = collection_names("idx_params")
    _make(server, shoal, name, shards=2)
    assert _schema(server, name) == _expected()

    # qdrant-client reads them back as its typed params.
    info = shoal.get_collection(name).payload_schema
    assert isinstance(info["tenant"].params, models.KeywordIndexParams) and info["tenant"].params.is_tenant is True
    assert isinstance(info["n"].params, models.IntegerIndexParams) and info["n"].params.is_principal is True
    assert info["owner"].params.is_tenant is True and info["at"].params.on_disk is True

    # The same answers as without the params (the oracle has no indexes).
    memory.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    memory.upsert(name, points=_points(), wait=True)
    filters = [
        models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchValue(value="t1"))]),
        models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=10, lt=30)),
                            models.FieldCondition(key="owner", match=models.MatchValue(value=TENANT.format(2)))]),
        models.Filter(must=[models.FieldCondition(key="at", range=models.DatetimeRange(gte="2024-01-10T00:00:00Z")),
                            models.FieldCondition(key="flag", match=models.MatchValue(value=True))]),
    ]
    for f in filters:
        a, b = (c.query_points(name, query=[1.0, 2.0, 0.5, 1.0], query_filter=f, limit=7) for c in (shoal, memory))
        assert_scored(a.points, b.points, limit=7, what=f"query with {f}")
        assert_same(shoal.count(name, count_filter=f), memory.count(name, count_filter=f), what=f"count with {f}")

    # Made again with other params, the index is replaced; a plain type has no params.
    shoal.create_payload_index(name, "tenant", field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
    shoal.create_payload_index(name, "n", field_schema=models.IntegerIndexParams(type="integer", lookup=False),
                               wait=True)
    schema = _schema(server, name)
    assert schema["tenant"] == {"data_type": "keyword", "points": N}
    assert schema["n"]["params"] == {"type": "integer", "lookup": False, "range": None, "is_principal": None}


@pytest.mark.parametrize("schema, status, text", [
    ({"type": "integer", "lookup": False, "range": False}, 422,
     "Validation error in JSON body: [field_schema.__all__: Validation error: the 'lookup' and 'range' "
     "capabilities can't be both disabled [{}]]"),
    ({"type": "keyword", "is_tenant": "yes"}, 400,
     "Format error in JSON body: data did not match any variant of untagged enum PayloadFieldSchema"),
    ({"type": "uuid", "on_disk": 1}, 400,
     "Format error in JSON body: data did not match any variant of untagged enum PayloadFieldSchema"),
    ({"type": "text", "stopwords": "klingon"}, 400,
     "Format error in JSON body: data did not match any variant of untagged enum PayloadFieldSchema"),
    ({"type": "text", "stemmer": {"type": "porter", "language": "english"}}, 400,
     "Format error in JSON body: data did not match any variant of untagged enum PayloadFieldSchema"),
])
def test_bad_params_are_refused_with_qdrant_texts_and_change_nothing(server, shoal, collection_names,
                                                                     schema, status, text):
    name = collection_names("idx_bad")
    shoal.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    got, body = call("PUT", f"{server.url}/collections/{name}/index?wait=true",
                     {"field_name": "f", "field_schema": schema})
    assert got == status and error_text(body).startswith(text), (got, body)
    assert _schema(server, name) == {}
    with pytest.raises(UnexpectedResponse):  # qdrant-client's own models let these through
        shoal.create_payload_index(name, "f", field_schema=models.IntegerIndexParams(
            type="integer", lookup=False, range=False), wait=True)
    assert _schema(server, name) == {}


def test_params_survive_a_snapshot_and_a_crash(server, make_client, collection_names):
    shoal = make_client()
    name, copy = collection_names("idx_keep"), collection_names("idx_copy")
    _make(server, shoal, name, shards=1)
    snapshot = shoal.create_snapshot(name, wait=True)
    status, answer = upload(server, copy, download(server, name, snapshot.name))
    assert (status, answer["result"]) == (200, True), answer
    assert _schema(server, copy) == _expected()

    server.restart(graceful=False)  # every process killed: the indexes come back from the WAL
    assert _schema(server, name) == _expected()
    assert _schema(server, copy) == _expected()
    shoal = make_client()
    hits = shoal.count(name, count_filter=models.Filter(must=[
        models.FieldCondition(key="tenant", match=models.MatchValue(value="t3"))]))
    assert hits.count == N // 4
