"""Request shapes: a search body's checks, done once per shape.

Most search traffic repeats one request shape -- the same filter, limit, params
and payload selector -- with a new query vector each time. Reading a body the
whole way (pydantic's check of the structure, Qdrant's rule walk, the dump back
to JSON-shaped data) costs the gateway about a third of its time per search;
measured on the benchmark's pos=adv load (100k points, 32 clients), taking it
off the path raised the throughput by about 40 %.

A body's *shape* is the body with its query vectors taken out: a dense one (a
list of numbers) or a sparse one (``{"indices", "values"}``), at the top and at
every level of a query's prefetch tree (a hybrid query holds one of each).
Whether a body is valid, and what it reads as, does not depend on which numbers
fill those vectors: no rule of these requests looks at a vector's values or
length beyond the vector itself (a dense vector's dimension is checked against
the collection later, as in Qdrant; a sparse vector's own rules are checked
here, as the whole reading checks them).
So the first body of a shape goes the whole way, and what it read as is kept
with the vector taken out; a later body of the same shape has only its vector
checked -- by the very type the model gives it, a list of f32 or a sparse vector
-- and is put back together from the kept part. Anything else (no dense vector where one is
expected, a vector that fails, a shape not yet seen) goes the whole way, so
every error is found and worded exactly as before.

The kept part is stored as JSON bytes and read afresh for every request, so a
request can never change what the next one gets.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import orjson
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from gateway.models.points import DenseVector, SparseVector, sparse_errors

MAX_SHAPES = 256  # shapes kept, least recently used dropped first
MAX_SHAPE_BYTES = 4096  # a bigger shape (a long id list, say) is not kept

_DENSE = TypeAdapter(DenseVector)
_SPARSE = TypeAdapter(SparseVector)

Path = tuple  # of str (a dict key) and int (a list position)
MAX_DEPTH = 4  # prefetch levels searched for vectors; a deeper body goes the whole way


def _at(body: Any, path: Path) -> Any:
    node = body
    for key in path:
        if type(key) is int:
            if type(node) is not list or key >= len(node):
                return None
        elif type(node) is not dict:
            return None
        node = node[key] if type(key) is int else node.get(key)
    return node


def _kind(value: Any) -> str | None:
    """"dense" for a list of numbers, "sparse" for ``{"indices", "values"}`` lists."""
    if type(value) is list and value and type(value[0]) in (float, int):
        return "dense"
    if type(value) is dict and value.keys() == {"indices", "values"} and all(type(v) is list for v in value.values()):
        return "sparse"
    return None


def _checked(kind: str, value: Any) -> Any:
    """The vector as the whole reading dumps it, checked as it checks it (the
    error is left to the whole reading: PydanticValidationError or ValueError)."""
    if kind == "dense":
        return _DENSE.validate_python(value)
    vector = _SPARSE.validate_python(value)
    if sparse_errors(vector.indices, vector.values, ""):
        raise ValueError("a sparse vector that breaks Qdrant's rules")
    return {"indices": vector.indices, "values": vector.values}


def _replaced(body: Any, path: Path, value: Any) -> Any:
    """``body`` with the value at ``path`` replaced, copying only the dicts and
    lists on the path."""
    out = list(body) if type(body) is list else dict(body)
    node = out
    for key in path[:-1]:
        node[key] = list(node[key]) if type(node[key]) is list else dict(node[key])
        node = node[key]
    node[path[-1]] = value
    return out


class ShapeCache:
    """Bodies of one request model read by shape; see the module docstring.

    ``paths`` are where a request node may hold its query vector, tried in order
    (a search's ``vector``; a query's ``query`` or ``query.nearest``): a dense
    one, or a sparse one (``{"indices", "values"}``). With ``nested`` (a query's
    ``prefetch``), the nodes listed there are searched too, to ``MAX_DEPTH``.
    """

    def __init__(self, paths: tuple[Path, ...], nested: str | None = None):
        self.paths = paths
        self.nested = nested
        self._shapes: OrderedDict[bytes, bytes] = OrderedDict()

    def _slots(self, body: dict) -> list[tuple[Path, str]] | None:
        """Where ``body``'s query vectors are and their kinds; None if too deep."""
        out: list[tuple[Path, str]] = []
        stack: list[tuple[Path, Any, int]] = [((), body, 0)]
        while stack:
            at, node, depth = stack.pop()
            if depth > MAX_DEPTH:
                return None
            for path in self.paths:
                kind = _kind(_at(node, path))
                if kind is not None:
                    out.append((at + path, kind))
                    break
            children = node.get(self.nested) if self.nested else None
            if type(children) is list:
                stack.extend((at + (self.nested, i), child, depth + 1)
                             for i, child in enumerate(children) if type(child) is dict)
        return out

    def read(self, body: Any, whole: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """What the decoded ``body`` reads as; ``whole()`` reads it the whole way."""
        if type(body) is not dict:
            return whole()
        slots = self._slots(body)
        if not slots:
            return whole()
        shape: Any = body
        for path, _ in slots:
            shape = _replaced(shape, path, None)
        try:
            key = orjson.dumps([shape, slots])
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, say: read the whole way
            return whole()
        kept = self._shapes.get(key)
        if kept is not None:
            try:
                checked = [_checked(kind, _at(body, path)) for path, kind in slots]
            except (PydanticValidationError, ValueError):
                return whole()  # worded by the whole reading
            self._shapes.move_to_end(key)
            out = orjson.loads(kept)
            for (path, _), value in zip(slots, checked):
                out = _replaced(out, path, value)
            return out
        out = whole()
        self._keep(key, slots, body, out)
        return out

    def _keep(self, key: bytes, slots: list[tuple[Path, str]], body: dict, out: dict[str, Any]) -> None:
        """Keep ``out`` without its vectors, if it holds each where the body did, as
        this reading would give it, and survives the trip through JSON bytes unchanged."""
        if len(key) > MAX_SHAPE_BYTES:
            return
        try:
            if any(_at(out, path) != _checked(kind, _at(body, path)) for path, kind in slots):
                return
        except (PydanticValidationError, ValueError):
            return
        shape: Any = out
        for path, _ in slots:
            shape = _replaced(shape, path, None)
        kept = orjson.dumps(shape)
        if orjson.loads(kept) != shape:
            return
        self._shapes[key] = kept
        if len(self._shapes) > MAX_SHAPES:
            self._shapes.popitem(last=False)
