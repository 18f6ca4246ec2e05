"""The text index's tokenizer with Qdrant 1.15's ``stopwords`` and ``stemmer``
(lib/segment/src/index/field_index/full_text_index/tokenizers/mod.rs, stop_words/,
tokenizers/stemmer.rs).

Expected answers come from Qdrant's own unit tests of those files where they have one,
and otherwise from the order its tokenizers apply things: lowercase, stopword check,
stem, then the length limits; with ``prefix`` the query is stemmed and cut to
``max_token_len`` but not checked against stopwords, and a phrase is tokenized as a
document. Where qdrant-edge (Qdrant's segment code as a Python package) is installed,
the stems, the stopword lists and whole match answers are compared with it.
"""

from __future__ import annotations

import random
import tempfile

import numpy as np
import pytest

from gateway.models.collections import LANGUAGES, SNOWBALL_LANGUAGES
from shard import filters
from shard.payload import PayloadStore
from shard.payload_index import analysis
from shard.payload_index.text import Tokenizer
from shard.types import BadInput

try:  # Qdrant's segment code; installed with the test extras
    import qdrant_edge as qe
except ImportError:  # pragma: no cover
    qe = None

needs_edge = pytest.mark.skipif(qe is None, reason="qdrant-edge-py is not installed")
ENGLISH = {"type": "snowball", "language": "english"}


def tok(**params) -> Tokenizer:
    return Tokenizer({"type": "text", **params})


class Ctx:
    """FilterContext over a PayloadStore: offset i holds point id i."""

    def __init__(self, rows, indexes=()):
        self.payloads = PayloadStore()
        for i, row in enumerate(rows):
            self.payloads.set(i, row)
        for key, schema in indexes:
            self.payloads.create_index(key, schema)
        self.size, self.live, self.vectors = len(rows), np.ones(len(rows), bool), {}

    def offsets_of(self, ids):
        return np.asarray([i for i in ids if isinstance(i, int) and i < self.size], np.int64)

    def has_vector(self, name):
        return np.zeros(self.size, bool)


def hits(ctx, cond) -> list[int]:
    return np.flatnonzero(filters.evaluate({"must": [cond]}, ctx)).tolist()


# ------------------------------------------------------------ Qdrant's own unit tests


def test_snowball_stemming_for_each_tokenizer():  # tokenizers/mod.rs test_stemming_snowball
    text = "interestingly proceeding living"
    assert tok(stemmer=ENGLISH).doc(text) == ["interest", "proceed", "live"]
    assert tok(tokenizer="whitespace", stemmer=ENGLISH).doc(text) == ["interest", "proceed", "live"]
    assert tok(tokenizer="multilingual", stemmer=ENGLISH).doc(text) == ["interest", "proceed", "live"]
    prefix = tok(tokenizer="prefix", min_token_len=3, max_token_len=4, stemmer=ENGLISH)
    assert prefix.doc(text) == ["int", "inte", "pro", "proc", "liv", "live"]


def test_language_stopwords():  # test_tokenizer_with_language_stopwords, ..._english_stopwords_string
    assert tok(stopwords="english").doc("The quick brown fox jumps over the lazy dog") == [
        "quick", "brown", "fox", "jumps", "lazy", "dog"]


def test_languages_and_custom_stopwords():  # test_tokenizer_with_mixed_stopwords, ..._english_spanish_custom_aaa
    mixed = tok(stopwords={"languages": ["english"], "custom": ["quick", "fox"]})
    assert mixed.doc("The quick brown fox jumps over the lazy dog") == ["brown", "jumps", "lazy", "dog"]
    two = tok(stopwords={"languages": ["english", "spanish"], "custom": ["I'd"]})
    assert two.doc("The quick brown fox jumps over the lazy dog I'd y de") == [
        "quick", "brown", "fox", "jumps", "lazy", "dog"]
    custom = tok(stopwords={"custom": ["as", "the", "a"]})
    assert custom.doc("The quick brown fox jumps over the lazy dog as a test") == [
        "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "test"]


def test_stopwords_are_case_sensitive_without_lowercase():  # test_tokenizer_with_case_sensitive_stopwords
    t = tok(lowercase=False, stopwords={"custom": ["the", "The", "LAZY"]})
    assert t.doc("The quick brown fox jumps over the lazy dog") == [
        "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
    assert tok(lowercase=False, stopwords="english").doc("The the AND and") == ["The", "AND"]
    assert tok(stopwords={"custom": ["Hello"]}).doc("hello HELLO Hello world") == ["world"]


@pytest.mark.parametrize("tokenizer", ["word", "whitespace", "prefix"])
def test_apostrophes(tokenizer):  # test_tokenizer_can_handle_apostrophes_parametrized
    tokens = tok(tokenizer=tokenizer, stopwords="english").doc("you'll be in town")
    assert "you" not in tokens and "ll" not in tokens and "you'll" not in tokens and "town" in tokens


# The stop_words/mod.rs test: a common stopword of every language.
COMMON = {
    "arabic": "في", "azerbaijani": "və", "basque": "eta", "bengali": "এবং", "catalan": "i", "chinese": "的",
    "danish": "og", "dutch": "en", "english": "and", "finnish": "ja", "french": "et", "german": "und",
    "greek": "και", "hebrew": "את", "hinglish": "aur", "hungarian": "és", "indonesian": "dan", "italian": "e",
    "japanese": "の", "kazakh": "жоқ", "nepali": "र", "norwegian": "og", "portuguese": "e", "romanian": "ar",
    "russian": "и", "slovene": "in", "spanish": "y", "swedish": "och", "tajik": "ва", "turkish": "ve",
}  # fmt: skip


def test_every_language_has_qdrants_list():
    assert set(analysis.stopword_languages()) == set(LANGUAGES) == set(COMMON)
    assert set(analysis.SNOWBALL_LANGUAGES) == set(SNOWBALL_LANGUAGES)
    for language, word in COMMON.items():
        t = tok(tokenizer="whitespace", stopwords=language)
        assert t.doc(f"{word} qdrant") == ["qdrant"], language
    # Verbatim: Basque's list repeats words and some end in spaces (which no token has).
    assert analysis.stopwords("basque")[:4] == ["ahala", "aitzitik", "al", "ala "]
    assert len(analysis.stopwords("english")) == 179 and "mustn't" in analysis.stopwords("english")


# ------------------------------------------------------------------ Qdrant's order


def test_stopwords_are_checked_before_stemming():
    t = tok(stopwords={"custom": ["run", "runs"]}, stemmer=ENGLISH)
    assert t.doc("run runs running") == ["run"]  # "running" is no stopword; its stem is "run"
    assert tok(stopwords="english", stemmer=ENGLISH).doc("Having having haves") == ["have"]


def test_length_limits_apply_to_the_stem():
    assert tok(stemmer=ENGLISH, min_token_len=4).doc("running jumping happily") == ["jump", "happili"]
    assert tok(stemmer=ENGLISH, max_token_len=4).doc("running jumping happily") == ["run", "jump"]
    # the minimum counts bytes (UTF-8), the maximum characters
    assert tok(min_token_len=3).doc("я ям ab") == ["ям"]
    assert tok(max_token_len=2).doc("ям abc") == ["ям"]


def test_prefix_queries_are_stemmed_and_cut_but_keep_stopwords():
    t = tok(tokenizer="prefix", stopwords="english", stemmer=ENGLISH, max_token_len=5)
    assert t.doc("the theory") == ["t", "th", "the", "theo", "theor"]  # "the" is a stopword, "theory" → "theori"
    assert t.query("the") == ["the"]  # found: "theory" was indexed under "the"
    assert t.query("connections") == ["conne"]  # stem "connect", then cut to 5
    assert t.query("theories") == ["theor"]


def test_a_phrase_is_tokenized_as_a_document():
    t = tok(tokenizer="prefix", max_token_len=3)
    assert t.doc("hello wor") == ["h", "he", "hel", "w", "wo", "wor"]
    rows = [{"t": "hello world"}, {"t": "help wanted"}, {"t": "world hello"}]
    ctx = Ctx(rows, [("t", {"type": "text", "tokenizer": "prefix", "phrase_matching": True})])
    assert hits(ctx, {"key": "t", "match": {"phrase": "hello wor"}}) == [0]
    assert hits(ctx, {"key": "t", "match": {"text": "hel wor"}}) == [0, 2]


def test_words_are_split_as_rust_splits_them():
    # Indic vowel signs and Arabic harakat are alphanumeric in Rust (Other_Alphabetic),
    # not in Python; a virama or a nukta is in neither, so "क्या" is two words in Qdrant
    # too, and Bengali's stopword "অনুযায়ী" can never be one token.
    assert tok().doc("हरेक पनि क्या") == ["हरेक", "पनि", "क", "या"]
    assert tok().doc("অনুযায়ী এবং") == ["অনুযায", "ী", "এবং"]
    assert tok().doc("أنتِ hello_world Ⓐb 𝐀bc") == ["أنتِ", "hello", "world", "ⓐb", "𝐀bc"]
    assert tok(stopwords="nepali").doc("हरेक पनि नेपाल") == ["नेपाल"]


# ----------------------------------------------------------------- index and filters


def test_match_text_with_stemming_and_stopwords():
    rows = [
        {"t": "The runner was running quickly"},
        {"t": "Runs of the connected connections"},
        {"t": ["a happy dog", "happiness of the dogs"]},
        {"t": "the and of"},
        {"t": 7},
    ]
    params = {"type": "text", "stopwords": "english", "stemmer": ENGLISH, "phrase_matching": True}
    ctx = Ctx(rows, [("t", params)])
    assert hits(ctx, {"key": "t", "match": {"text": "runs"}}) == [0, 1]
    assert hits(ctx, {"key": "t", "match": {"text": "connecting dog"}}) == []
    assert hits(ctx, {"key": "t", "match": {"text": "connecting runs"}}) == [1]
    assert hits(ctx, {"key": "t", "match": {"text": "dogs happy"}}) == [2]
    assert hits(ctx, {"key": "t", "match": {"text_any": "connection happiness"}}) == [1, 2]
    assert hits(ctx, {"key": "t", "match": {"text": "the of"}}) == []  # nothing but stopwords
    # stopwords hold no position: "runner running" is a phrase of "runner was running"
    assert hits(ctx, {"key": "t", "match": {"phrase": "runners running"}}) == [0]
    assert hits(ctx, {"key": "t", "match": {"phrase": "running runner"}}) == []


def test_nested_conditions_use_the_same_tokenizer():
    rows = [{"o": [{"t": "The runners"}, {"t": "a dog"}]}, {"o": [{"t": "running late"}]}, {"o": [{"t": "ran"}]}]
    params = {"type": "text", "stopwords": "english", "stemmer": ENGLISH, "phrase_matching": True}
    ctx = Ctx(rows, [("o[].t", params)])
    nested = lambda m: {"nested": {"key": "o", "filter": {"must": [{"key": "t", "match": m}]}}}  # noqa: E731
    assert hits(ctx, nested({"text": "runner"})) == [0]
    assert hits(ctx, nested({"text": "run"})) == [1]
    assert hits(ctx, nested({"phrase": "the running lately"})) == [1]
    assert hits(ctx, nested({"text": "the"})) == []


def test_nested_match_text_wants_its_tokens_in_one_string():
    # text_index.rs check_payload_match: each string of the value on its own (the
    # index itself pools a point's strings)
    rows = [{"o": [{"t": ["runner", "quick"]}]}, {"o": [{"t": "quick runners"}]}]
    ctx = Ctx(rows, [("o[].t", {"type": "text", "stemmer": ENGLISH})])
    nested = lambda m: {"nested": {"key": "o", "filter": {"must": [{"key": "t", "match": m}]}}}  # noqa: E731
    assert hits(ctx, nested({"text": "runners quickly"})) == [1]
    assert hits(ctx, nested({"text_any": "runners zzz"})) == [0, 1]
    assert hits(ctx, {"key": "o[].t", "match": {"text": "runners quickly"}}) == [0, 1]


@pytest.mark.parametrize("params", [
    {"stopwords": "klingon"},
    {"stopwords": {"languages": ["english", "klingon"]}},
    {"stopwords": 5},
    {"stemmer": {"type": "porter", "language": "english"}},
    {"stemmer": {"type": "snowball", "language": "klingon"}},
    {"stemmer": {"type": "snowball", "language": "catalan"}},  # a stopword language, no Snowball one
    {"stemmer": "english"},
])
def test_bad_params_are_refused_and_change_nothing(params):
    store = PayloadStore()
    store.set(0, {"t": "hello"})
    with pytest.raises(BadInput):
        store.create_index("t", {"type": "text", **params})
    assert store.payload_schema() == {} and store.index_for("t") is None


# ------------------------------------------------------------- Qdrant's segment code


def _edge_bm25(**kw):
    base = dict(stopwords=qe.StopwordsSet(languages=set(), custom=set()), stemmer=qe.DisabledStemmer())
    return qe.Bm25(qe.Bm25Config(**(base | kw)))


# Words whose stems newer Snowball releases (the snowballstemmer and PyStemmer packages)
# changed: Qdrant's rust-stemmers keeps the older ones.
CHANGED = {
    "french": ["canoë", "naïve", "gaëlliques", "héroïque", "aïeux", "Noël", "Hamrer"],
    "russian": ["ёлка", "зелёный", "артёмович", "пулемётчик", "Фёдоров"],
    "dutch": ["als", "kleine", "lopen", "gelopen"],
    "german": ["ismael", "kraftfahrzeugelektrikerin", "straßburger"],
    "romanian": ["galați", "deşi", "puţin"],
}


@needs_edge
def test_stems_equal_qdrants():
    """Each language's stemmer against Qdrant's (rust-stemmers), through qdrant-edge's
    BM25 tokens: a word stemmed there gives the token our stem gives unstemmed."""
    rnd = random.Random(11)
    raw = _edge_bm25(tokenizer=qe.TokenizerType.Whitespace, lowercase=False)
    samples = {language: list(analysis.stopwords(language)) for language in analysis.stopword_languages()}
    for language in SNOWBALL_LANGUAGES:
        words = [w for w in samples.get(language, []) if " " not in w and "\t" not in w]
        letters = sorted({c for w in words for c in w.lower() if c.isalpha()}) or list("abcdefghijklmnopqrstuvwxyz")
        if language == "armenian":
            letters = [chr(c) for c in range(0x0561, 0x0587)]
        if language == "tamil":
            letters = [chr(c) for c in range(0x0B85, 0x0BCE) if chr(c).isalpha() or 0x0BBE <= c <= 0x0BCD]
        ends = [w[-n:] for w in words for n in (1, 2, 3, 4) if len(w) > n] or ["a"]
        made = ["".join(rnd.choice(letters) for _ in range(rnd.randint(2, 9))) + rnd.choice(ends) for _ in range(600)]
        model = _edge_bm25(tokenizer=qe.TokenizerType.Whitespace, lowercase=False,
                           stemmer=qe.SnowballParams(getattr(qe.SnowballLanguage, language.capitalize())))
        stem = analysis.stemmer(language)
        for word in words + made + CHANGED.get(language, []):
            assert list(model.embed_query(word).indices) == list(raw.embed_query(stem(word)).indices or [0]), (
                language, word, stem(word))


@needs_edge
def test_stopword_lists_and_word_splitting_equal_qdrants():
    """Every word of every list, lowercased or not, split by the word and whitespace
    tokenizers: the tokens left are Qdrant's."""
    raw = _edge_bm25(tokenizer=qe.TokenizerType.Whitespace, lowercase=False)
    for language in analysis.stopword_languages():
        words = analysis.stopwords(language)
        words = words + [w.upper() for w in words[:40]] + ["qdrant", "x" + words[0]]
        for kind in ("Word", "Whitespace"):
            for lowercase in (True, False):
                model = _edge_bm25(tokenizer=getattr(qe.TokenizerType, kind), lowercase=lowercase,
                                   stopwords=getattr(qe.Language, language.capitalize()))
                ours = tok(tokenizer=kind.lower(), lowercase=lowercase, stopwords=language)
                for w in words:
                    want = sorted(model.embed_query(w).indices)
                    got = sorted({i for t in ours.query(w) for i in raw.embed_query(t).indices})
                    assert got == want, (language, kind, lowercase, w, ours.query(w))


VOCAB = ("The running runner runs quickly; quick brown foxes jumped over lazy dogs. Connected connections "
         "connecting CONNECTS and/or studies studying studied. Über straße Häuser hausen Laufen läuft "
         "you'll isn't won't d'un l'home generous generously happiness happy the a an of I'd").split()

EDGE_PARAMS = [
    {"stemmer": ENGLISH},
    {"stopwords": "english", "stemmer": ENGLISH, "min_token_len": 4},
    {"stopwords": {"languages": ["english", "german"], "custom": ["Quick", "runner"]}, "lowercase": False},
    {"tokenizer": "whitespace", "stopwords": "english", "stemmer": ENGLISH},
    {"tokenizer": "prefix", "stopwords": "english", "stemmer": ENGLISH, "max_token_len": 5},
    {"tokenizer": "prefix", "stemmer": {"type": "snowball", "language": "german"}, "min_token_len": 2},
    {"stemmer": {"type": "snowball", "language": "german"}, "lowercase": False, "max_token_len": 6},
    {"stopwords": "english", "stemmer": ENGLISH, "phrase_matching": True},
    {"tokenizer": "prefix", "stopwords": "english", "phrase_matching": True},
]


def _edge_text_params(p: dict):
    kw = {k: p[k] for k in ("lowercase", "min_token_len", "max_token_len", "phrase_matching") if k in p}
    if "tokenizer" in p:
        kw["tokenizer"] = getattr(qe.TokenizerType, p["tokenizer"].capitalize())
    stop = p.get("stopwords")
    if isinstance(stop, str):
        kw["stopwords"] = getattr(qe.Language, stop.capitalize())
    elif isinstance(stop, dict):
        languages = {getattr(qe.Language, lang.capitalize()) for lang in stop.get("languages", [])}
        kw["stopwords"] = qe.StopwordsSet(languages=languages, custom=set(stop.get("custom", [])))
    if "stemmer" in p:
        kw["stemmer"] = qe.SnowballParams(getattr(qe.SnowballLanguage, p["stemmer"]["language"].capitalize()))
    return qe.TextIndexParams(**kw)


@needs_edge
@pytest.mark.parametrize("params", EDGE_PARAMS, ids=range(len(EDGE_PARAMS)))
def test_match_answers_equal_qdrants(params):
    rnd = random.Random(repr(params))
    text = lambda n: " ".join(rnd.choice(VOCAB) for _ in range(rnd.randint(1, n)))  # noqa: E731
    # one string per point: Qdrant matches a phrase across a point's strings
    rows = [{"t": text(6)} for _ in range(40)]
    ctx = Ctx(rows, [("t", {"type": "text", **params})])
    modes = {"text": qe.MatchText, "text_any": qe.MatchTextAny}
    if params.get("phrase_matching"):
        modes["phrase"] = qe.MatchPhrase
    with tempfile.TemporaryDirectory() as root:
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=2, distance=qe.Distance.Dot))
        shard = qe.EdgeShard.create(root, config)
        try:
            shard.update(qe.UpdateOperation.create_field_index("t", _edge_text_params(params)))
            shard.update(qe.UpdateOperation.upsert_points([qe.Point(i, [0.1, 0.2], r) for i, r in enumerate(rows)]))
            for _ in range(40):
                query = text(3)
                query = query[: rnd.randint(1, len(query))] if rnd.random() < 0.3 else query
                for mode, match in modes.items():
                    records, _ = shard.scroll(qe.ScrollRequest(
                        limit=100, filter=qe.Filter(must=[qe.FieldCondition("t", match=match(query))])))
                    want = sorted(r.id for r in records)
                    assert hits(ctx, {"key": "t", "match": {mode: query}}) == want, (mode, query)
        finally:
            shard.close()
