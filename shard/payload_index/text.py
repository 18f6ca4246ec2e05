"""The full-text index and the tokenizers it shares with nested text conditions.

"match text" means every query token is among the point's tokens (those of all its
strings); "text_any" any of them; a phrase must appear within one string, and only in
an index created with ``phrase_matching: true``.
"""

from __future__ import annotations

import re

import numpy as np

from shard.json_path import values_at
from shard.payload_index.base import FieldIndex


class Tokenizer:
    """Qdrant's text index tokenizers (tokenizers/mod.rs): ``word`` splits on every
    non-alphanumeric character, ``whitespace`` on whitespace, ``prefix`` indexes every
    prefix of each word; tokens are lowercased unless ``lowercase: false``. The
    ``multilingual`` tokenizer (charabia) is approximated by ``word``; stemmers and
    stopword languages are not applied, only ``stopwords.custom``."""

    _WORD = re.compile(r"[^\W_]+")

    def __init__(self, params: dict | None):
        params = params or {}
        self.kind = params.get("tokenizer") or "word"
        self.lowercase = params.get("lowercase") is not False
        self.min_len = params.get("min_token_len")
        self.max_len = params.get("max_token_len")
        stop = params.get("stopwords")
        custom = stop.get("custom") if isinstance(stop, dict) else None
        self.stopwords = {(w.lower() if self.lowercase else w) for w in (custom or ())}

    def _words(self, text: str) -> list[str]:
        words = text.split() if self.kind == "whitespace" else self._WORD.findall(text)
        return [w.lower() for w in words] if self.lowercase else words

    def _keep(self, token: str) -> bool:
        if self.min_len is not None and len(token.encode()) < self.min_len:
            return False
        return self.max_len is None or len(token) <= self.max_len

    def doc(self, text: str) -> list[str]:
        out = []
        for word in self._words(text):
            if word in self.stopwords:
                continue
            if self.kind != "prefix":
                out.append(word)
                continue
            for n in range(self.min_len or 1, (self.max_len or len(word)) + 1):
                if n >= len(word):
                    out.append(word)
                    break
                out.append(word[:n])
        return [t for t in out if self._keep(t)]

    def query(self, text: str) -> list[str]:
        if self.kind != "prefix":
            return self.doc(text)
        words = [w[: self.max_len] if self.max_len else w for w in self._words(text)]
        return [w for w in words if self._keep(w)]


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

    def text_mask(self, text, mode, size):
        tokens = self.tokenizer.query(text)
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
        for nested conditions, where the index's tokenizer still applies)."""
        docs = [self.tokenizer.doc(s) for s in strings]
        tokens = self.tokenizer.query(text)
        if not tokens:
            return False
        if mode == "phrase":
            return self.phrases and any(has_phrase(doc, tokens) for doc in docs)
        have = {t for doc in docs for t in doc}
        return any(t in have for t in tokens) if mode == "any" else all(t in have for t in tokens)
