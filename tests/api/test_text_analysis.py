"""Text indexes with Qdrant 1.15's ``stopwords`` and ``stemmer``, through qdrant-client
1.15.1 and raw HTTP: which points "match text" and "phrase" find, how the
params are reported, and what is refused.

The expected answers follow Qdrant's source (full_text_index/tokenizers/mod.rs and
text_index.rs): each word is lowercased, dropped if a stopword, stemmed (Snowball, as
rust-stemmers stems), and only then held against the length limits; a query goes the
same way (with ``prefix``, stemmed and cut but not checked against stopwords); a phrase
is tokenized as a document. tests/test_text_index.py checks the same rules against
Qdrant's segment code (qdrant-edge).

``QdrantClient(":memory:")`` has no payload indexes: its "match text" is a substring
test, with no stemming or stopwords. It is the oracle only for what it does the same
way: scoring and ordering the points a text filter lets through (given to it as the
ids Qdrant's rules select).
"""

from __future__ import annotations

import pytest
from qdrant_client import models

from tests.api.compare import assert_scored
from tests.api.rawhttp import call, error_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

DOCS = {
    1: "The runner was running quickly",
    2: "Runs of the connected connections",
    3: ["a happy dog", "happiness of the dogs"],
    4: "the and of",
    5: "Connecting people, theory and practice",
    6: "Les chats et les chiens",
    7: 42,
}
ENGLISH = models.TextIndexParams(
    type=models.TextIndexType.TEXT,
    tokenizer=models.TokenizerType.WORD,
    stopwords=models.Language.ENGLISH,
    stemmer=models.SnowballParams(type=models.Snowball.SNOWBALL, language=models.SnowballLanguage.ENGLISH),
    phrase_matching=True,
)


@pytest.fixture
def server(shoal_server):
    if shoal_server is None:
        pytest.skip("text indexes need a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    shoal_server.ensure_up()
    return shoal_server


def _vector(i: int) -> list[float]:
    return [1.0, float(i % 3), float(i % 5) / 2, 0.5]


def _points() -> list[models.PointStruct]:
    return [models.PointStruct(id=i, vector=_vector(i), payload={"t": t, "n": i}) for i, t in DOCS.items()]


def _collection(shoal, collection_names, shards: int, schema) -> str:
    name = collection_names("text")
    shoal.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                            shard_number=shards)
    shoal.upsert(name, points=_points(), wait=True)
    assert shoal.create_payload_index(name, "t", field_schema=schema, wait=True).status == "completed"
    return name


def _ids(shoal, name: str, match) -> list[int]:
    flt = models.Filter(must=[models.FieldCondition(key="t", match=match)])
    records, _ = shoal.scroll(name, scroll_filter=flt, limit=100)
    assert shoal.count(name, count_filter=flt).count == len(records)
    return sorted(r.id for r in records)


def _schema(server, name: str) -> dict:
    status, body = call("GET", f"{server.url}/collections/{name}")
    assert status == 200, body
    return body["result"]["payload_schema"]


def test_english_stemmer_and_stopwords(server, shoal, memory, collection_names, shard_number):
    name = _collection(shoal, collection_names, shard_number, ENGLISH)
    text = lambda q: _ids(shoal, name, models.MatchText(text=q))  # noqa: E731
    assert text("runs") == [1, 2]  # running, Runs → "run"; "runner" stays "runner"
    assert text("runners") == [1]
    assert text("connect") == [2, 5]  # connected, connections, Connecting → "connect"
    assert text("connecting runs") == [2]
    assert text("dogs happy") == [3]  # within one string or across two: a point's tokens
    assert text("happily") == []  # → "happili", not "happi"
    assert text("the") == [] and text("of the") == []  # nothing but stopwords finds nothing
    assert text("THE Theories") == [5]  # "theory" and "theories" → "theori"
    # a stopword holds no position: "runner running" is a phrase of "runner was running"
    assert _ids(shoal, name, models.MatchPhrase(phrase="runners running")) == [1]
    assert _ids(shoal, name, models.MatchPhrase(phrase="running runner")) == []
    assert _ids(shoal, name, models.MatchPhrase(phrase="connected with the connection")) == [2]

    # Scored and ordered as the oracle scores and orders the same points.
    memory.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    memory.upsert(name, points=_points(), wait=True)
    query = [1.0, 2.0, 0.5, 1.0]
    for q, ids in (("runs", [1, 2]), ("connect", [2, 5])):
        a = shoal.query_points(name, query=query, limit=5, query_filter=models.Filter(
            must=[models.FieldCondition(key="t", match=models.MatchText(text=q))]))
        b = memory.query_points(name, query=query, limit=5, query_filter=models.Filter(
            must=[models.HasIdCondition(has_id=ids)]))
        assert_scored(a.points, b.points, limit=5, what=f"match text {q!r}")

    info = shoal.get_collection(name).payload_schema["t"]  # "the and of" gives no token: not counted
    assert info.points == 5 and info.params == ENGLISH


def test_stopword_set_and_aliases_reported_as_qdrant_serialises_them(server, shoal, collection_names):
    name = collection_names("text_set")
    shoal.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    shoal.upsert(name, points=_points(), wait=True)
    schema = {"type": "text", "lowercase": False,
              "stopwords": {"languages": ["fr", "en", "english"], "custom": ["dog", "Quick", "dog"]},
              "stemmer": {"type": "snowball", "language": "fr"}}
    status, body = call("PUT", f"{server.url}/collections/{name}/index?wait=true", {"field_name": "t", "field_schema": schema})
    assert status == 200, body
    # languages and custom are BTreeSets in Qdrant: sorted, without repeats; aliases
    # are read as the language they name.
    assert _schema(server, name)["t"] == {"data_type": "text", "points": 5, "params": {
        "type": "text", "tokenizer": "word", "lowercase": False,
        "stopwords": {"languages": ["english", "french"], "custom": ["Quick", "dog"]},
        "stemmer": {"type": "snowball", "language": "french"}}}
    params = shoal.get_collection(name).payload_schema["t"].params
    assert params.stopwords == models.StopwordsSet(languages=[models.Language.ENGLISH, models.Language.FRENCH],
                                                   custom=["Quick", "dog"])
    # French stems ("chats" → "chat"); "les", "et" are French stopwords; no lowercase:
    # "The" is no stopword ("the" is), "dog" is a custom one, "dogs" is not.
    assert _ids(shoal, name, models.MatchText(text="chat chien")) == [6]
    assert _ids(shoal, name, models.MatchText(text="les")) == []
    assert _ids(shoal, name, models.MatchText(text="The")) == [1]
    assert _ids(shoal, name, models.MatchText(text="the")) == []
    assert _ids(shoal, name, models.MatchText(text="dog")) == []
    assert _ids(shoal, name, models.MatchText(text="dogs")) == [3]

    # A plain language name with its alias, through qdrant-client's own models.
    status, body = call("PUT", f"{server.url}/collections/{name}/index?wait=true", {
        "field_name": "t", "field_schema": {"type": "text", "stopwords": "de", "stemmer": {"type": "snowball", "language": "hy"}}})
    assert status == 200, body
    assert _schema(server, name)["t"]["params"] == {
        "type": "text", "tokenizer": "word", "stopwords": "german", "stemmer": {"type": "snowball", "language": "armenian"}}


def test_prefix_tokenizer_with_stemmer_and_stopwords(server, shoal, collection_names):
    schema = models.TextIndexParams(
        type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.PREFIX, max_token_len=5,
        stopwords=models.Language.ENGLISH, phrase_matching=True,
        stemmer=models.SnowballParams(type=models.Snowball.SNOWBALL, language=models.SnowballLanguage.ENGLISH))
    name = _collection(shoal, collection_names, 1, schema)
    text = lambda q: _ids(shoal, name, models.MatchText(text=q))  # noqa: E731
    assert text("the") == [5]  # a prefix query keeps stopwords: "the" is a prefix of "theory"
    assert text("connections") == [2, 5]  # stemmed to "connect", cut to "conne"
    assert text("ru") == [1, 2]
    assert text("quickness") == [1]  # "quick" (stem of "quickness"; "quickly" → "quick")
    # a phrase is tokenized as a document: every prefix of each word, in order
    assert _ids(shoal, name, models.MatchPhrase(phrase="runner running")) == [1]
    assert _ids(shoal, name, models.MatchPhrase(phrase="running runner")) == []
    assert _ids(shoal, name, models.MatchPhrase(phrase="runn runn")) == []


BAD = [
    {"type": "text", "stopwords": "klingon"},
    {"type": "text", "stopwords": {"languages": ["english", "klingon"]}},
    {"type": "text", "stopwords": {"languages": "english"}},
    {"type": "text", "stopwords": 5},
    {"type": "text", "stopwords": "English"},
    {"type": "text", "stemmer": {"type": "porter", "language": "english"}},
    {"type": "text", "stemmer": {"type": "snowball", "language": "catalan"}},
    {"type": "text", "stemmer": {"type": "snowball"}},
    {"type": "text", "stemmer": "english"},
]


@pytest.mark.parametrize("schema", BAD, ids=range(len(BAD)))
def test_bad_params_are_refused_and_change_nothing(server, shoal, collection_names, schema):
    name = _collection(shoal, collection_names, 1, ENGLISH)
    before = _schema(server, name)
    status, body = call("PUT", f"{server.url}/collections/{name}/index?wait=true",
                        {"field_name": "t", "field_schema": schema})
    assert status == 400, body
    assert error_text(body).startswith(
        "Format error in JSON body: data did not match any variant of untagged enum PayloadFieldSchema at line 1 column "
    ), body
    assert _schema(server, name) == before
    assert _ids(shoal, name, models.MatchText(text="runs")) == [1, 2]
