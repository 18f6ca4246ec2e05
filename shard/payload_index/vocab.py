"""Dictionary-encoded indexes: keyword and uuid.

Both map each distinct value to an int id and answer ``match`` (value, any, except)
with numpy over the ids. As in Qdrant, only values of the index's type count, so for
``except`` a point whose field holds only other types does not match; uuid values and
queries are compared as parsed UUIDs, so case and format do not matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shard.json_path import JsonPath
from shard.payload_index.base import FieldIndex
from shard.payload_index.values import parse_uuid, uuid_str


class _VocabIndex(FieldIndex):
    """Values dictionary-encoded to int ids (keyword, uuid)."""

    dtype = np.int64
    facetable = True

    def __init__(self, path: JsonPath, params: dict | None = None):
        super().__init__(path, params)
        self.vocab: dict[Any, int] = {}
        self.rev: list[Any] = []

    def _encode(self, key: Any) -> int:
        i = self.vocab.get(key)
        if i is None:
            i = self.vocab[key] = len(self.rev)
            self.rev.append(key)
        return i

    def dump(self):
        return {"col": self.col.dump(), "vocab": [self._key_state(k) for k in self.rev]}

    def restore(self, state):
        self.rev = [self._key_from_state(k) for k in state["vocab"]]
        self.vocab = {k: i for i, k in enumerate(self.rev)}
        self.col.restore(state["col"])

    def _key_state(self, key: Any) -> Any:
        return key

    def _key_from_state(self, key: Any) -> Any:
        return key

    def _keys(self, values: list) -> list | None:
        """Vocabulary keys of condition values, or None when the index can't answer."""
        raise NotImplementedError

    def match_value_mask(self, value, size):
        keys = self._keys([value])
        if keys is None:
            return None
        i = self.vocab.get(keys[0])
        return np.zeros(size, bool) if i is None else self.col.mask(lambda a: a == i, size)

    def match_any_mask(self, values, size, negate=False):
        keys = self._keys(values)
        if keys is None:
            return None
        ids = np.asarray([self.vocab[k] for k in keys if k in self.vocab], np.int64)
        if negate:  # "except": some value of the point is outside the list
            return self.col.mask(lambda a: ~np.isin(a, ids), size)
        return self.col.mask(lambda a: np.isin(a, ids), size) if len(ids) else np.zeros(size, bool)

    def _decode(self, v):
        return self.rev[v]


class KeywordIndex(_VocabIndex):
    kind = "keyword"

    def _convert(self, value):
        if type(value) is not str:
            return None
        i = self.vocab.get(value)
        return self._encode(value) if i is None else i

    def _keys(self, values):
        return values if all(type(v) is str for v in values) else None


class UuidIndex(_VocabIndex):
    kind = "uuid"

    def _convert(self, value):
        u = parse_uuid(value)
        return None if u is None else self._encode(u)

    def _keys(self, values):
        keys = [parse_uuid(v) for v in values]
        return None if any(k is None for k in keys) else keys

    def _decode(self, v):
        return uuid_str(self.rev[v])

    def _key_state(self, key):
        return f"{key:032x}"  # 128-bit ints are beyond JSON numbers

    def _key_from_state(self, key):
        return int(key, 16)
