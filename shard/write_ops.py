"""How each write op changes a shard: ``LocalShard``'s half that validates and applies
ops (``shard.types.OP_TYPES``), kept apart so that the shard's module holds its life
cycle, its log and its reads.

A mixin: its methods work on the shard's own stores (``config``, ``points``,
``payloads``, ``vectors``, ``sparse``, ``multi``, ``graphs``, ``indexed``) and sequence (``seq``), always
with the shard's lock held; ``_settle`` makes graphs and stores match the config after a
``configure`` op (and after a restore, which the shard runs). ``_validate`` refuses an op before it is logged; ``_apply`` is
deterministic, so that replaying the log (or a replica applying the primary's
records) rebuilds the same state.

Multivectors travel in an op as ``"multi": {name: {"counts", "rows"}}``: each
point's row count (0: none given) and all their rows in one (total, dim) float32
array, so a ragged batch is two arrays in the log, not one per point. Logs
written before multivectors have no "multi" and read as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shard import filters, graphs, multi, sparse
from shard.types import OP_TYPES, BadInput, Op, PointId, PointNotFound


class WriteOps:
    def _validate(self, op: Op) -> None:
        kind = op.get("type")
        if kind not in OP_TYPES:
            raise BadInput(f"unknown operation {kind!r}")
        if "vectors" in op:
            for name, array in op["vectors"].items():
                params = self.config.vector(name)
                if array.ndim != 2 or array.shape[1] != params.size:
                    got = array.shape[-1] if array.ndim else 0
                    raise BadInput(f"Vector dimension error: expected dim: {params.size}, got {got}")
                if array.shape[0] != len(op["ids"]):
                    raise BadInput("the number of vectors differs from the number of ids")
                if not np.isfinite(array).all():
                    raise BadInput("Vector contains NaN or infinite values")
        for name, rows in (op.get("sparse") or {}).items():
            self.config.sparse_vector(name)
            if len(rows) != len(op["ids"]):
                raise BadInput("the number of vectors differs from the number of ids")
            for row in rows:
                if row is not None:
                    sparse.validate(row[0], row[1])
        for name, entry in (op.get("multi") or {}).items():
            params = self.config.multi_vector(name)
            counts, rows = np.asarray(entry["counts"]), np.asarray(entry["rows"])
            if counts.ndim != 1 or len(counts) != len(op["ids"]):
                raise BadInput("the number of vectors differs from the number of ids")
            if (counts < 0).any() or rows.ndim != 2 or int(counts.sum()) != rows.shape[0]:
                raise BadInput("a multivector's rows do not match their counts")
            if rows.shape[1] != params.size:
                raise BadInput(multi.dimension_error(params.size, rows.shape[1]))
            if not np.isfinite(rows).all():
                raise BadInput("Vector contains NaN or infinite values")
        if kind == "delete_vectors":
            for name in op["names"]:
                if name not in self.config.sparse and name not in self.config.multi:
                    self.config.vector(name)
        if kind in ("update_vectors", "set_payload", "overwrite_payload", "delete_payload", "clear_payload"):
            for point_id in op.get("ids") or ():
                if point_id not in self.points.offset_of:
                    raise PointNotFound(point_id)
        if kind == "create_index":
            self.payloads.check_index_schema(op["field"], op["schema"])
        if kind == "configure":
            for name in op["settings"]:
                self.config.vector(name)

    def _selected(self, op: Op) -> np.ndarray:
        """Offsets an op addresses, by ids or by filter."""
        if op.get("filter") is not None:
            return np.flatnonzero(filters.evaluate(op["filter"], self))
        return self.points.offsets_of(op.get("ids") or ())

    def _apply(self, seq: int, op: Op) -> None:
        """Apply a validated op. Deterministic: replaying the log rebuilds the state."""
        kind = op["type"]
        if kind == "upsert":
            self._upsert(op, seq)
        elif kind == "configure":
            self._configure(op["settings"])
        elif kind == "update_vectors":
            offsets = self.points.offsets_of(op["ids"])
            self._set_vectors(offsets, op["vectors"], op.get("vector_mask"), replace=False)
            self._set_sparse(offsets, op.get("sparse") or {}, replace=False)
            self._set_multi(offsets, {n: multi.op_rows(e) for n, e in (op.get("multi") or {}).items()}, replace=False)
            self.points.versions[offsets] = seq
        else:
            offsets = self._selected(op)
            if kind == "delete_points":
                self._delete(offsets)
            elif kind == "delete_vectors":
                for name in op["names"]:
                    self._clear_vector(name, offsets)
                self.points.versions[offsets] = seq
            elif kind in ("set_payload", "overwrite_payload", "delete_payload", "clear_payload"):
                self._payload_op(kind, op, offsets)
                self.points.versions[offsets] = seq
            elif kind == "create_index":
                self.payloads.create_index(op["field"], op["schema"])
            elif kind == "delete_index":
                self.payloads.delete_index(op["field"])
        self.seq = seq

    def _upsert(self, op: Op, seq: int) -> None:
        ids: list[PointId] = op["ids"]
        # Duplicate ids in one batch: the last occurrence wins, as in Qdrant.
        last = {point_id: row for row, point_id in enumerate(ids)}
        rows = np.fromiter(last.values(), dtype=np.int64, count=len(last))
        offsets = np.fromiter((self.points.assign(i)[0] for i in last), dtype=np.int64, count=len(last))
        vectors = {n: a[rows] for n, a in op["vectors"].items()}
        masks = {n: m[rows] for n, m in (op.get("vector_mask") or {}).items()}
        self._set_vectors(offsets, vectors, masks, replace=True)
        self._set_sparse(offsets, {n: [given[r] for r in rows.tolist()] for n, given in (op.get("sparse") or {}).items()},
                         replace=True)
        multis = {n: multi.op_rows(e) for n, e in (op.get("multi") or {}).items()}
        self._set_multi(offsets, {n: [given[r] for r in rows.tolist()] for n, given in multis.items()}, replace=True)
        payloads = op.get("payloads")
        for row, offset in zip(rows.tolist(), offsets.tolist()):
            self.payloads.set(offset, (payloads[row] if payloads else None) or {})
        self.points.versions[offsets] = seq

    def _set_vectors(self, offsets, vectors, masks, *, replace: bool) -> None:
        """Store the given vectors; with ``replace`` (upsert) a point loses the
        vectors it was not given, as Qdrant replaces the whole point."""
        for name in self.config.vectors:
            if name in vectors:
                mask = (masks or {}).get(name)
                given = offsets if mask is None else offsets[mask]
                array = vectors[name] if mask is None else vectors[name][mask]
                self.vectors[name].set(given, array)
                self._invalidate(name, given)
                if mask is not None and replace:
                    self._clear_vector(name, offsets[~mask])
            elif replace:
                self._clear_vector(name, offsets)

    def _set_sparse(self, offsets: np.ndarray, given: dict[str, list], *, replace: bool) -> None:
        """Sparse vectors as ``_set_vectors`` stores dense ones: a row's None, or a
        name not given, leaves the point's vector alone, or with ``replace``
        (upsert) removes it."""
        _set_rows(self.sparse, offsets, given, replace)

    def _set_multi(self, offsets: np.ndarray, given: dict[str, list], *, replace: bool) -> None:
        """Multivectors as ``_set_sparse`` stores sparse ones."""
        _set_rows(self.multi, offsets, given, replace)

    def _clear_vector(self, name: str, offsets: np.ndarray) -> None:
        if name in self.sparse:
            self.sparse[name].clear(offsets)
            return
        if name in self.multi:
            self.multi[name].clear(offsets)
            return
        self.vectors[name].clear(offsets)
        self._invalidate(name, offsets)

    def _invalidate(self, name: str, offsets: np.ndarray) -> None:
        indexed = self.indexed[name]
        inside = offsets[offsets < indexed.shape[0]]
        indexed[inside] = False

    def _delete(self, offsets: np.ndarray) -> None:
        for name in [*self.config.vectors, *self.config.sparse, *self.config.multi]:
            self._clear_vector(name, offsets)
        for offset in offsets.tolist():
            self.payloads.remove(offset)
            self.points.release(offset)

    def _payload_op(self, kind: str, op: Op, offsets: np.ndarray) -> None:
        store = self.payloads
        for offset in offsets.tolist():
            if kind == "set_payload":
                store.merge(offset, op["payload"], op.get("key"))
            elif kind == "overwrite_payload":
                store.set(offset, op["payload"])
            elif kind == "delete_payload":
                store.delete_keys(offset, op["keys"])
            else:
                store.clear(offset)

    def _configure(self, settings: dict[str, dict[str, Any]]) -> None:
        """A ``configure`` op (a PATCH of vectors' quantization or ``on_disk``, through
        the log like any write): each vector named takes its settings. A graph built
        under another quantization is dropped, and the indexer builds the new one
        while searches score the vectors exactly (as Qdrant's optimizer rebuilds
        segments); vectors whose ``on_disk`` changed move to their new storage."""
        self.config = self.config.with_vector_settings(settings)
        self._settle()
        self._epoch += 1

    def _settle(self) -> None:
        """Graphs and stores as the config now says: a graph of another kind
        dropped (rebuilt by the indexer), a store in RAM or in a map file moved."""
        for name, graph in self.graphs.items():
            if graph is not None and not graphs.matches(graph, self.config, name):
                self.graphs[name] = None
                self.indexed[name] = np.zeros(self.size, dtype=bool)
        for name, old in list(self.vectors.items()):
            if (old.file is not None) != bool(self.config.vectors[name].on_disk):
                new = self._new_store(name, old.capacity)
                new.copy_from(old)
                self.vectors[name] = new
                old.close()


def _set_rows(stores: dict, offsets: np.ndarray, given: dict[str, list], replace: bool) -> None:
    """Each store's rows of ``given`` at ``offsets`` (a sparse or multivector store:
    ``set`` and ``clear`` by offset). A row's None, or a name not given, leaves the
    point's vector alone, or with ``replace`` (upsert) removes it."""
    for name, store in stores.items():
        rows = given.get(name)
        if rows is None:
            if replace:
                store.clear(offsets)
            continue
        held = [(o, row) for o, row in zip(offsets.tolist(), rows) if row is not None]
        if replace:
            store.clear([o for o, row in zip(offsets.tolist(), rows) if row is None])
        store.set([o for o, _ in held], [row for _, row in held])
