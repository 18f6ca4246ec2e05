"""Indexes of numbers, datetimes and booleans: integer, float, datetime, bool.

Each holds one numpy scalar per value, so ``match`` and ``range`` are one vectorised
comparison. As in Qdrant, an integer ``range`` ignores float payload values, an integer
index answers only what its ``lookup``/``range`` params enable, and a datetime range
goes only to a datetime index (timestamps in microseconds).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from shard.payload_index.base import FieldIndex
from shard.payload_index.values import I64_MAX, I64_MIN, as_int, as_number, parse_datetime


def _range_pred(bounds: dict) -> Callable[[np.ndarray], np.ndarray]:
    def pred(a: np.ndarray) -> np.ndarray:
        m = np.ones(a.shape, bool)
        if "gt" in bounds:
            m &= a > bounds["gt"]
        if "gte" in bounds:
            m &= a >= bounds["gte"]
        if "lt" in bounds:
            m &= a < bounds["lt"]
        if "lte" in bounds:
            m &= a <= bounds["lte"]
        return m

    return pred


class IntegerIndex(FieldIndex):
    kind = "integer"
    dtype = np.int64

    def __init__(self, path, params=None):
        super().__init__(path, params)
        self.lookup = (params or {}).get("lookup") is not False
        self.ranged = (params or {}).get("range") is not False
        self.facetable = self.lookup
        self.orderable = self.ranged

    def _convert(self, value):
        return as_int(value)

    def match_value_mask(self, value, size):
        if not self.lookup or as_int(value) is None:
            return None
        return self.col.mask(lambda a: a == value, size)

    def match_any_mask(self, values, size, negate=False):
        if not self.lookup or not values or any(as_int(v) is None for v in values):
            return None
        ids = np.asarray(values, np.int64)
        return self.col.mask((lambda a: ~np.isin(a, ids)) if negate else (lambda a: np.isin(a, ids)), size)

    def range_mask(self, bounds, is_datetime, size):
        if not self.ranged or is_datetime:
            return None
        # Integer bounds equivalent to the float ones, so big values compare exactly.
        lo, hi = I64_MIN, I64_MAX
        if "gt" in bounds:
            lo = max(lo, math.floor(bounds["gt"]) + 1)
        if "gte" in bounds:
            lo = max(lo, math.ceil(bounds["gte"]))
        if "lt" in bounds:
            hi = min(hi, math.ceil(bounds["lt"]) - 1)
        if "lte" in bounds:
            hi = min(hi, math.floor(bounds["lte"]))
        if lo > hi:
            return np.zeros(size, bool)
        return self.col.mask(lambda a: (a >= lo) & (a <= hi), size)


class _RangeIndex(FieldIndex):
    """A ``range`` is one comparison of the column with the bounds; a float index answers
    numeric bounds, a datetime index datetime ones (``datetimes``), never the other."""

    orderable = True
    datetimes = False

    def range_mask(self, bounds, is_datetime, size):
        return self.col.mask(_range_pred(bounds), size) if is_datetime == self.datetimes else None


class FloatIndex(_RangeIndex):
    kind = "float"
    dtype = np.float64

    def _convert(self, value):
        return as_number(value)


class DatetimeIndex(_RangeIndex):
    """Timestamps in microseconds (Qdrant's ``DateTimeWrapper::timestamp``)."""

    kind = "datetime"
    dtype = np.int64
    datetimes = True

    def _convert(self, value):
        return parse_datetime(value)


class BoolIndex(FieldIndex):
    kind = "bool"
    dtype = np.int8
    facetable = True

    def _convert(self, value):
        return int(value) if type(value) is bool else None

    def match_value_mask(self, value, size):
        if type(value) is not bool:
            return None
        flag = int(value)
        return self.col.mask(lambda a: a == flag, size)

    def _decode(self, v):
        return bool(v)
