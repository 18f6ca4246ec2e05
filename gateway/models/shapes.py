"""Request shapes: a search body's checks, done once per shape.

Most search traffic repeats one request shape -- the same filter, limit, params
and payload selector -- with a new query vector each time. Reading a body the
whole way (pydantic's check of the structure, Qdrant's rule walk, the dump back
to JSON-shaped data) costs the gateway about a third of its time per search;
measured on the benchmark's pos=adv load (100k points, 32 clients), taking it
off the path raised the throughput by about 40 %.

A body's *shape* is the body with its dense query vector taken out. Whether a
body is valid, and what it reads as, does not depend on which list of numbers
fills that vector: no rule of these requests looks at a dense vector's values or
length (its dimension is checked against the collection later, as in Qdrant).
So the first body of a shape goes the whole way, and what it read as is kept
with the vector taken out; a later body of the same shape has only its vector
checked -- by the very type the model gives it, a list of f32 -- and is put back
together from the kept part. Anything else (no dense vector where one is
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

from gateway.models.points import DenseVector

MAX_SHAPES = 256  # shapes kept, least recently used dropped first
MAX_SHAPE_BYTES = 4096  # a bigger shape (a long id list, say) is not kept

_DENSE = TypeAdapter(DenseVector)

Path = tuple[str, ...]


def _dense_at(body: Any, path: Path) -> list | None:
    """The list of numbers at ``path`` in ``body``, if that is what is there."""
    node = body
    for key in path:
        if type(node) is not dict:
            return None
        node = node.get(key)
    if type(node) is list and node and type(node[0]) in (float, int):
        return node
    return None


def _replaced(body: dict, path: Path, value: Any) -> dict:
    """``body`` with the value at ``path`` replaced, copying only the dicts on the path."""
    out = dict(body)
    node = out
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[path[-1]] = value
    return out


class ShapeCache:
    """Bodies of one request model read by shape; see the module docstring.

    ``paths`` are where the model may hold its dense query vector, tried in
    order (a search's ``vector``; a query's ``query`` or ``query.nearest``).
    """

    def __init__(self, paths: tuple[Path, ...]):
        self.paths = paths
        self._shapes: OrderedDict[tuple[int, bytes], bytes] = OrderedDict()

    def read(self, body: Any, whole: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """What the decoded ``body`` reads as; ``whole()`` reads it the whole way."""
        if type(body) is not dict:
            return whole()
        for i, path in enumerate(self.paths):
            vector = _dense_at(body, path)
            if vector is not None:
                return self._by_shape(body, i, path, vector, whole)
        return whole()

    def _by_shape(self, body: dict, i: int, path: Path, vector: list, whole) -> dict[str, Any]:
        try:
            key = (i, orjson.dumps(_replaced(body, path, None)))
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, say: read the whole way
            return whole()
        kept = self._shapes.get(key)
        if kept is not None:
            try:
                checked = _DENSE.validate_python(vector)
            except PydanticValidationError:
                return whole()  # worded by the whole reading
            self._shapes.move_to_end(key)
            return _replaced(orjson.loads(kept), path, checked)
        out = whole()
        self._keep(key, path, out)
        return out

    def _keep(self, key: tuple[int, bytes], path: Path, out: dict[str, Any]) -> None:
        """Keep ``out`` without its vector, if it holds the vector where the body did
        and survives the trip through JSON bytes unchanged."""
        if len(key[1]) > MAX_SHAPE_BYTES or _dense_at(out, path) is None:
            return
        shape = _replaced(out, path, None)
        kept = orjson.dumps(shape)
        if orjson.loads(kept) != shape:
            return
        self._shapes[key] = kept
        if len(self._shapes) > MAX_SHAPES:
            self._shapes.popitem(last=False)
