"""Payload indexes of one shard, one module per family of index kinds, and the typing of
payload values they share with filters.

- ``base``: the per-offset value column and the ``FieldIndex`` interface;
- ``values``: which JSON values are integers, numbers, datetimes, UUIDs (used by filters,
  payload ordering and formulas too);
- ``vocab``: keyword and uuid; ``scalar``: integer, float, datetime, bool; ``geo``: geo
  points and the geometry geo conditions share; ``text``: full text and its tokenizers;
  ``analysis``: what the tokenizers take from Qdrant besides the splitting (its stopword
  lists, its Snowball stemmers, Rust's notion of an alphanumeric character).

A condition an index "handles" is answered from the index alone, which is where Qdrant's
results differ from a payload scan (lib/segment/src/index/field_index):

- keyword / integer / uuid ``except``: only values of the index's type count, so a point
  whose field holds only other types does not match;
- integer ``range``: float payload values are not in an integer index;
- uuid: values and query are compared as parsed UUIDs, so case and format do not matter;
- full text: "match text" means every query token is among the point's tokens.

A condition whose value type the index does not hold (say an integer match on a keyword
index) is left to the payload scan, as Qdrant falls back to the payload.

This module is the registry: a schema's kind names its class (the names snapshots keep).
"""

from __future__ import annotations

from shard.json_path import JsonPath
from shard.payload_index.base import FieldIndex
from shard.payload_index.geo import GeoIndex
from shard.payload_index.scalar import BoolIndex, DatetimeIndex, FloatIndex, IntegerIndex
from shard.payload_index.text import TextIndex
from shard.payload_index.vocab import KeywordIndex, UuidIndex

INDEX_TYPES: dict[str, type[FieldIndex]] = {
    cls.kind: cls
    for cls in (KeywordIndex, IntegerIndex, FloatIndex, BoolIndex, UuidIndex, DatetimeIndex, GeoIndex, TextIndex)
}


def make_index(path: JsonPath, kind: str, params: dict | None) -> FieldIndex:
    return INDEX_TYPES[kind](path, params)
