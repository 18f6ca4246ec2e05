"""What every payload index shares: the per-offset value column and the ``FieldIndex``
interface that filters, facets and ``order_by`` call.

An index keeps, per offset, the values of its key path that have its type (arrays at the
end of the path flattened one level, as Qdrant's ``FieldIndexBuilder`` does), laid out so
that one condition over 100k points is a few vectorised numpy operations: each offset's
first value in a numpy column, further values of multi-valued points in a side table.
``dump``/``restore`` write that column as plain JSON, the form snapshots keep.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from shard.json_path import JsonPath, values_at


class _Column:
    """Per-offset values: the first in a numpy column, the rest in ``extra``."""

    def __init__(self, dtype):
        self.first = np.zeros(0, dtype)
        self.count = np.zeros(0, np.int32)
        self.extra: dict[int, list] = {}
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self.points = 0

    def _grow(self, n: int) -> None:
        if n <= len(self.count):
            return
        cap = max(n, 2 * len(self.count), 1024)
        first = np.zeros(cap, self.first.dtype)
        first[: len(self.first)] = self.first
        count = np.zeros(cap, np.int32)
        count[: len(self.count)] = self.count
        self.first, self.count = first, count

    def put(self, offset: int, values: list) -> None:
        self.drop(offset)
        if not values:
            return
        self._grow(offset + 1)
        self.first[offset] = values[0]
        self.count[offset] = len(values)
        self.points += 1
        if len(values) > 1:
            self.extra[offset] = values[1:]
            self._cache = None

    def drop(self, offset: int) -> None:
        if offset < len(self.count) and self.count[offset]:
            self.count[offset] = 0
            self.points -= 1
            if self.extra.pop(offset, None) is not None:
                self._cache = None

    def load(self, rows: list[tuple[int, list]]) -> None:
        """Bulk ``put`` of ``(offset, values)`` rows into an empty column."""
        rows = [r for r in rows if r[1]]
        if not rows:
            return
        self._grow(max(o for o, _ in rows) + 1)
        offs = np.fromiter((o for o, _ in rows), np.int64, len(rows))
        self.first[offs] = [v[0] for _, v in rows]
        self.count[offs] = [len(v) for _, v in rows]
        self.points = len(rows)
        self.extra = {o: v[1:] for o, v in rows if len(v) > 1}
        self._cache = None

    def dump(self) -> dict:
        """Plain-JSON state: offsets holding values, their values (complex numbers as
        ``[real, imag]`` pairs), so a snapshot load needs no payload scan."""
        nz = np.flatnonzero(self.count)
        first = self.first[nz]
        cplx = first.dtype.kind == "c"
        return {
            "offsets": nz.tolist(),
            "first": [first.real.tolist(), first.imag.tolist()] if cplx else first.tolist(),
            "count": self.count[nz].tolist(),
            "extra": [[o, [[v.real, v.imag] for v in vs] if cplx else vs] for o, vs in self.extra.items()],
        }

    def restore(self, state: dict) -> None:
        offs = np.asarray(state["offsets"], np.int64)
        if len(offs):
            self._grow(int(offs.max()) + 1)
            first = state["first"]
            if self.first.dtype.kind == "c":
                first = np.asarray(first[0], float) + 1j * np.asarray(first[1], float)
            self.first[offs] = first
            self.count[offs] = state["count"]
        self.points = len(offs)
        cplx = self.first.dtype.kind == "c"
        self.extra = {o: [complex(*v) for v in vs] if cplx else vs for o, vs in state["extra"]}
        self._cache = None

    def values(self, offset: int) -> list:
        if offset >= len(self.count) or not self.count[offset]:
            return []
        return [self.first[offset].item()] + list(self.extra.get(offset, ()))

    def _extras(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            offs = [o for o, vs in self.extra.items() for _ in vs]
            vals = [v for vs in self.extra.values() for v in vs]
            self._cache = (np.asarray(offs, np.int64), np.asarray(vals, self.first.dtype))
        return self._cache

    def mask(self, pred: Callable[[np.ndarray], np.ndarray], size: int) -> np.ndarray:
        """Offsets (< size) with at least one value satisfying the vectorised ``pred``."""
        out = np.zeros(size, bool)
        n = min(size, len(self.count))
        if n:
            out[:n] = (self.count[:n] > 0) & pred(self.first[:n])
        if self.extra:
            offs, vals = self._extras()
            hit = offs[pred(vals)]
            out[hit[hit < size]] = True
        return out

    def pairs(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(offset, value)`` rows of the given offsets, one per value."""
        offsets = np.asarray(offsets, np.int64)
        offsets = offsets[offsets < len(self.count)]
        offsets = offsets[self.count[offsets] > 0]
        offs, vals = [offsets], [self.first[offsets]]
        if self.extra:
            e_offs, e_vals = self._extras()
            sel = np.isin(e_offs, offsets)
            offs.append(e_offs[sel])
            vals.append(e_vals[sel])
        return np.concatenate(offs), np.concatenate(vals)


def _unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


_MISSING = object()


class FieldIndex:
    """One payload index. Subclasses say which values they hold (``_convert``) and which
    conditions they answer; every ``*_mask`` returns a bool mask of length ``size`` or
    None when the index does not handle that condition."""

    kind = ""
    dtype: Any = np.int64
    facetable = False
    orderable = False

    def __init__(self, path: JsonPath, params: dict | None = None):
        self.path = path
        self.params = params
        self.col = _Column(self.dtype)

    def _convert(self, value: Any) -> Any:
        """The index's encoding of one payload value, or None when it doesn't hold it."""
        raise NotImplementedError

    def _extract(self, values: Iterable) -> list:
        conv = self._convert
        return _unique(c for c in map(conv, values) if c is not None)

    def set(self, offset: int, payload: dict | None) -> None:
        self.col.put(offset, self._extract(values_at(payload, self.path)) if payload else [])

    def remove(self, offset: int) -> None:
        self.col.drop(offset)

    def build(self, payloads: list) -> None:
        """Index every payload at once (index creation, snapshot load); a fast path for
        top-level keys, since rebuilding indexes of 100k points must stay cheap."""
        conv, extract, key = self._convert, self._extract, self.path.first_key
        rows = []
        if self.path.rest:
            for o, p in enumerate(payloads):
                if p:
                    vals = extract(values_at(p, self.path))
                    if vals:
                        rows.append((o, vals))
        else:
            for o, p in enumerate(payloads):
                if not p:
                    continue
                v = p.get(key, _MISSING)
                if v is _MISSING:
                    continue
                if type(v) is list:
                    vals = extract(v)
                    if vals:
                        rows.append((o, vals))
                else:
                    c = conv(v)
                    if c is not None:
                        rows.append((o, [c]))
        self.col.load(rows)

    def points_count(self) -> int:
        return self.col.points

    def dump(self) -> dict:
        return {"col": self.col.dump()}

    def restore(self, state: dict) -> None:
        self.col.restore(state["col"])

    def match_value_mask(self, value: Any, size: int) -> np.ndarray | None:
        return None

    def match_any_mask(self, values: list, size: int, negate: bool = False) -> np.ndarray | None:
        return None

    def range_mask(self, bounds: dict, is_datetime: bool, size: int) -> np.ndarray | None:
        return None

    def geo_mask(self, vec_pred, exact, size: int) -> np.ndarray | None:
        return None

    def text_mask(self, text: str, mode: str, size: int) -> np.ndarray | None:
        return None

    def facet_values(self, offsets: np.ndarray) -> list[tuple[Any, int]]:
        """Each value held by the offsets with the number of offsets holding it."""
        _, vals = self.col.pairs(offsets)
        uniq, counts = np.unique(vals, return_counts=True)
        return [(self._decode(v.item()), int(c)) for v, c in zip(uniq, counts)]

    def _decode(self, v: Any) -> Any:
        return v
