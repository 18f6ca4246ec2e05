"""The full-text index and the tokenizers it shares with nested text conditions.

"match text" means every query token is among the point's tokens (those of all its
strings); "text_any" any of them; a phrase must appear within one string, and only in
an index created with ``phrase_matching: true``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from shard.json_path import values_at
from shard.payload_index import analysis
from shard.payload_index.base import FieldIndex
from shard.types import BadInput


class Tokenizer:
    """Qdrant 1.15's text index tokenizers (full_text_index/tokenizers/mod.rs).

    ``word`` splits on every character that is not alphanumeric in Rust's sense,
    ``whitespace`` on whitespace; ``prefix`` splits as ``word`` and indexes every prefix
    of each word. The ``multilingual`` tokenizer (charabia) is approximated by ``word``.
    Each word then goes, in Qdrant's order: lowercased (unless ``lowercase: false``),
    dropped if a stopword (``stopwords``: a language, or ``{languages, custom}``; the
    lists lowercased too), stemmed (``stemmer``: Snowball), and only then measured
    against ``min_token_len`` / ``max_token_len``. So a stopword is recognised in its
    unstemmed form, and length limits apply to the stem.

    A query is tokenized the same way, except with ``prefix``: its words are not
    checked against stopwords (a typed "the" must still find "theory") and each is cut
    to ``max_token_len`` characters instead of being expanded into prefixes.
    """

    def __init__(self, params: dict | None):
        params = params or {}
        self.kind = params.get("tokenizer") or "word"
        self.lowercase = params.get("lowercase") is not False
        self.min_len = params.get("min_token_len")
        self.max_len = params.get("max_token_len")
        self.stopwords = self._stopwords(params.get("stopwords"))
        self.stem = self._stemmer(params.get("stemmer"))

    def _stopwords(self, stop) -> set[str]:
        """Qdrant's ``StopwordsFilter``: the languages' lists and the custom words,
        lowercased when the index lowercases."""
        if stop is None:
            return set()
        if isinstance(stop, str):
            languages, custom = [stop], []
        elif isinstance(stop, dict):
            languages, custom = stop.get("languages") or [], stop.get("custom") or []
        else:
            raise BadInput(f"Invalid stopwords: {stop!r}")
        words: list[str] = []
        for language in languages:
            try:
                words += analysis.stopwords(language)
            except (KeyError, TypeError):
                raise BadInput(f"Unknown stopwords language: {language!r}") from None
        words += custom
        return {w.lower() for w in words} if self.lowercase else set(words)

    @staticmethod
    def _stemmer(spec) -> Callable[[str], str] | None:
        if spec is None:
            return None
        if not isinstance(spec, dict) or spec.get("type") != "snowball":
            raise BadInput(f"Unknown stemmer: {spec!r}")
        try:
            return analysis.stemmer(spec.get("language"))
        except (KeyError, TypeError):
            raise BadInput(f"Unknown snowball stemmer language: {spec.get('language')!r}") from None

    def _words(self, text: str) -> list[str]:
        words = text.split() if self.kind == "whitespace" else analysis.words(text)
        return [w.lower() for w in words] if self.lowercase else words

    def _keep(self, token: str) -> bool:
        """Qdrant's length filter: shorter than ``min_token_len`` in bytes and in
        characters, or longer than ``max_token_len`` in both, is dropped (so bytes
        decide the minimum and characters the maximum)."""
        if self.min_len is not None and len(token.encode()) < self.min_len:
            return False
        return self.max_len is None or len(token) <= self.max_len

    def _terms(self, words: list[str], stopwords: bool) -> list[str]:
        stem, stop = self.stem, self.stopwords if stopwords else ()
        return [stem(w) if stem else w for w in words if w not in stop]

    def doc(self, text: str) -> list[str]:
        """The tokens a string is indexed under, in order (a phrase query too is
        tokenized as a document, as Qdrant's ``parse_phrase_query`` does)."""
        terms = self._terms(self._words(text), True)
        if self.kind == "prefix":
            terms = [p for term in terms for p in self._prefixes(term)]
        return [t for t in terms if self._keep(t)]

    def _prefixes(self, term: str) -> list[str]:
        """Prefixes of ``min_token_len`` (default 1) up to ``max_token_len`` characters,
        the whole term once a prefix would reach it (Qdrant's n-gram loop)."""
        out, n = [], self.min_len if self.min_len is not None else 1
        while self.max_len is None or n <= self.max_len:
            if n >= len(term):
                out.append(term)
                break
            out.append(term[:n])
            n += 1
        return out

    def query(self, text: str) -> list[str]:
        """The tokens of a ``text`` / ``text_any`` query."""
        if self.kind != "prefix":
            return self.doc(text)
        terms = self._terms(self._words(text), False)
        if self.max_len is not None:
            terms = [t[: self.max_len] for t in terms]
        return [t for t in terms if self._keep(t)]


def has_phrase(doc: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return bool(doc) and n > 0 and any(doc[i : i + n] == phrase for i in range(len(doc) - n + 1))


class TextIndex(FieldIndex):
    """Full-text index. A point's tokens are those of all its strings: "match text"
    wants every query token among them. Phrases are matched within one string, and only
    when the index was created with ``phrase_matching: true`` (otherwise Qdrant keeps no
    token positions and a phrase matches nothing)."""

    kind = "text"

    def __init__(self, path, params=None):
        super().__init__(path, params)
        self.tokenizer = Tokenizer(params)
        self.phrases = (params or {}).get("phrase_matching") is True
        self.docs: dict[int, list[list[str]]] = {}  # per offset: tokens of each string
        self.postings: dict[str, set[int]] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def _add(self, offset: int, docs: list[list[str]]) -> None:
        tokens = {t for doc in docs for t in doc}
        if not tokens:
            return
        self.docs[offset] = docs
        for token in tokens:
            self.postings.setdefault(token, set()).add(offset)
            self._arrays.pop(token, None)

    def set(self, offset, payload):
        self.remove(offset)
        if payload:
            strings = [v for v in values_at(payload, self.path) if type(v) is str]
            self._add(offset, [self.tokenizer.doc(v) for v in strings])

    def remove(self, offset):
        docs = self.docs.pop(offset, None)
        for token in {t for doc in docs or () for t in doc}:
            posting = self.postings[token]
            posting.discard(offset)
            if not posting:
                del self.postings[token]
            self._arrays.pop(token, None)

    def build(self, payloads):
        for o, p in enumerate(payloads):
            if p:
                self.set(o, p)

    def points_count(self):
        return len(self.docs)

    def dump(self):
        return {"docs": [[o, docs] for o, docs in self.docs.items()]}

    def restore(self, state):
        for o, docs in state["docs"]:
            self._add(o, docs)

    def _posting(self, token: str, size: int) -> np.ndarray:
        arr = self._arrays.get(token)
        if arr is None:
            posting = self.postings.get(token, ())
            arr = self._arrays[token] = np.fromiter(posting, np.int64, len(posting))
        mask = np.zeros(size, bool)
        mask[arr[arr < size]] = True
        return mask

    def _query_tokens(self, text: str, mode: str) -> list[str]:
        """Qdrant parses a phrase as a document and text / text_any as a query (they
        differ for the prefix tokenizer only)."""
        return self.tokenizer.doc(text) if mode == "phrase" else self.tokenizer.query(text)

    def text_mask(self, text, mode, size):
        tokens = self._query_tokens(text, mode)
        if not tokens or (mode == "phrase" and not self.phrases):
            return np.zeros(size, bool)
        if mode == "any":
            mask = np.zeros(size, bool)
            for t in set(tokens):
                mask |= self._posting(t, size)
            return mask
        mask = np.ones(size, bool)
        for t in set(tokens):
            mask &= self._posting(t, size)
        if mode == "phrase":
            for o in np.flatnonzero(mask).tolist():
                mask[o] = any(has_phrase(doc, tokens) for doc in self.docs[o])
        return mask

    def check_strings(self, strings: list[str], text: str, mode: str) -> bool:
        """Qdrant's ``check_payload_match``: the condition against given strings (used
        for nested conditions, where the index's tokenizer still applies). Unlike the
        index, it takes one string at a time: "match text" wants every query token in
        the same string."""
        tokens = self._query_tokens(text, mode)
        if not tokens or (mode == "phrase" and not self.phrases):
            return False
        for s in strings:
            doc = self.tokenizer.doc(s)
            if mode == "phrase":
                found = has_phrase(doc, tokens)
            else:
                have = set(doc)
                found = any(t in have for t in tokens) if mode == "any" else all(t in have for t in tokens)
            if found:
                return True
        return False
