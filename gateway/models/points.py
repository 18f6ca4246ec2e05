"""Point requests: upsert, retrieve, selectors, payloads, vectors, batch
updates, scroll, count, facet -- and the selectors every read shares
(``with_payload``, ``with_vector``, ``shard_key``).

Mirrors Qdrant 1.15's lib/api rest schema.rs and lib/collection point_ops.rs.
Point ids come out canonical (``canonical_id``); vectors stay plain lists of
floats.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import AliasChoices, Discriminator, Field, RootModel, StrictFloat, Tag, model_validator
from pydantic_core import ValidationError as CoreValidationError

from gateway.models.base import NESTED, Length, QModel, Range, schema_error
from gateway.models.filters import DateTime, Filter
from gateway.models.serde import (
    F64,
    I64,
    U32,
    U64,
    Bool,
    ExtendedPointId,
    JsonPath,
    Payload,
    Str,
    USize,
    Untagged,
    enum,
    serde_error,
)
from shard.multi import MultiVectorError, check_shape

# ---------------------------------------------------------------------------
# Shared selectors.
# ---------------------------------------------------------------------------

ShardKey = Untagged("ShardKey", Str, U64)
ShardKeySelector = Untagged("ShardKeySelector", ShardKey, list[ShardKey])


class PayloadSelectorInclude(QModel):
    include: list[JsonPath]

    @model_validator(mode="before")
    @classmethod
    def _deny_unknown(cls, data: Any) -> Any:
        return _deny(data, ("include",))


class PayloadSelectorExclude(QModel):
    exclude: list[JsonPath]

    @model_validator(mode="before")
    @classmethod
    def _deny_unknown(cls, data: Any) -> Any:
        return _deny(data, ("exclude",))


def _deny(data: Any, fields: tuple[str, ...]) -> Any:
    """serde's ``deny_unknown_fields``."""
    if isinstance(data, dict):
        for key in data:
            if key not in fields:
                names = " or ".join(f"`{f}`" for f in fields) if len(fields) <= 2 else ", ".join(fields)
                raise serde_error(f"unknown field `{key}`, expected {names}", "key:" + key)
    return data


PayloadSelector = Untagged("PayloadSelector", PayloadSelectorInclude, PayloadSelectorExclude)
WithPayloadInterface = Untagged("WithPayloadInterface", Bool, list[JsonPath], PayloadSelector)
WithVector = Untagged("WithVector", Bool, list[Str])

WITH_VECTOR = Field(default=None, validation_alias=AliasChoices("with_vector", "with_vectors"))

# ---------------------------------------------------------------------------
# Vectors.
# ---------------------------------------------------------------------------

DenseVector = list[StrictFloat]
MultiDenseVector = list[list[StrictFloat]]


class SparseVector(QModel):
    indices: list[U32]
    values: list[StrictFloat]

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return sparse_errors(self.indices, self.values, path)


def sparse_errors(indices: list, values: list, path: str) -> list[tuple[str, str]]:
    """Qdrant's validate_sparse_vector_impl."""
    out = []
    prefix = f"{path}." if path else ""
    if len(indices) != len(values):
        out.append((prefix + "values", schema_error("must be the same length as indices")))
    if len(set(indices)) != len(indices):
        out.append((prefix + "indices", schema_error("must be unique")))
    return out


def multi_errors(multi: list, path: str) -> list[tuple[str, str]]:
    """Qdrant's validate_multi_vector (field ``data``): no rows, an empty row, too
    many values, rows of different lengths (``shard.multi.check_shape``)."""
    try:
        check_shape(multi)
    except MultiVectorError as exc:
        return [(f"{path}.{field}" if path else field, message) for field, message in exc.errors]
    return []


class Document(QModel):
    text: Str
    model: Str
    options: Optional[Payload] = None


class Image(QModel):
    image: Any
    model: Str
    options: Optional[Payload] = None


class InferenceObject(QModel):
    object: Any
    model: Str
    options: Optional[Payload] = None


Vector = Untagged("Vector", DenseVector, SparseVector, MultiDenseVector, Document, Image, InferenceObject)
VectorStruct = Untagged(
    "VectorStruct", DenseVector, MultiDenseVector, dict[str, Vector], Document, Image, InferenceObject
)
BatchVectorStruct = Untagged(
    "BatchVectorStruct",
    list[DenseVector],
    list[MultiDenseVector],
    dict[str, list[Vector]],
    list[Document],
    list[Image],
    list[InferenceObject],
)


def _is_multi(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], list)


def vector_struct_errors(vector: Any, path: str) -> list[tuple[str, str]]:
    """Qdrant's VectorStruct::validate (single dense: nothing to check)."""
    if _is_multi(vector):
        return multi_errors(vector, path)
    if isinstance(vector, dict):
        base = f"{path}.?" if path else "?"
        for item in vector.values():
            errs = vector_errors(item, base)
            if errs:
                return errs
    return []


def vector_errors(item: Any, path: str) -> list[tuple[str, str]]:
    """Qdrant's Vector::validate: sparse and multi-dense vectors have rules."""
    if isinstance(item, SparseVector):
        return item.qdrant_checks(path)
    if _is_multi(item):
        return multi_errors(item, path)
    return []


def vector_struct_is_empty(vector: Any) -> bool:
    if isinstance(vector, list):
        return len(vector) == 0
    if isinstance(vector, dict):
        for item in vector.values():
            if isinstance(item, SparseVector):
                if item.indices:
                    return False
            elif isinstance(item, list):
                if item:
                    return False
            else:
                return False
        return True
    return False


# ---------------------------------------------------------------------------
# Upsert.
# ---------------------------------------------------------------------------


class PointStruct(QModel):
    id: ExtendedPointId
    vector: Annotated[VectorStruct, Field(validation_alias=AliasChoices("vector", "vectors"))]
    payload: Optional[Payload] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return vector_struct_errors(self.vector, f"{path}.vector" if path else "vector")


class PointsList(QModel):
    __serde_position__ = "none"
    points: Annotated[list[PointStruct], NESTED]
    shard_key: Optional[ShardKeySelector] = None


class Batch(QModel):
    ids: list[ExtendedPointId]
    vectors: BatchVectorStruct
    payloads: Optional[list[Optional[Payload]]] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        where = f"{path}.batch" if path else "batch"
        vectors = self.vectors
        if isinstance(vectors, dict):
            base = f"{path}.?" if path else "?"
            for column in vectors.values():
                for item in column:
                    errs = vector_errors(item, base)
                    if errs:
                        return errs
        elif vectors and _is_multi(vectors[0]):
            for multi in vectors:
                errs = multi_errors(multi, path)
                if errs:
                    return errs
        n = len(self.ids)
        columns = list(vectors.values()) if isinstance(vectors, dict) else [vectors]
        for column in columns:
            if len(column) != n:
                return [(where, f"number of ids and vectors must be equal ({n} != {len(column)})")]
        if self.payloads is not None and len(self.payloads) != n:
            return [(where, f"number of ids and payloads must be equal ({n} != {len(self.payloads)})")]
        return []


class PointsBatch(QModel):
    __serde_position__ = "none"
    batch: Annotated[Batch, NESTED]
    shard_key: Optional[ShardKeySelector] = None


INSERT_FORMAT_ERROR = "Invalid PointInsertOperations format"


def _insert_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "batch" in value:
            return "batch"
        if "points" in value:
            return "points"
    return None


# Inside a batch update operation (an untagged enum, so its errors never show).
PointInsertOperationsUnion = Annotated[
    Union[Annotated[PointsBatch, Tag("batch")], Annotated[PointsList, Tag("points")]],
    Discriminator(_insert_kind, custom_error_type="serde", custom_error_message=INSERT_FORMAT_ERROR),
]


class PointInsertOperations:
    """The upsert body. Qdrant reads it into a serde_json::Value and picks the
    variant by key -- ``batch`` first, then ``points`` -- so its errors carry no
    position, and a body with neither is "Invalid PointInsertOperations
    format". ``model_validate`` returns a PointsBatch or a PointsList."""

    __serde_position__ = "none"

    @classmethod
    def model_validate(cls, data: Any) -> PointsBatch | PointsList:
        kind = _insert_kind(data)
        if kind == "batch":
            return PointsBatch.model_validate(data)
        if kind == "points":
            return PointsList.model_validate(data)
        raise CoreValidationError.from_exception_data(
            "PointInsertOperations",
            [{"type": serde_error(INSERT_FORMAT_ERROR, "custom"), "loc": (), "input": data}],
        )


# ---------------------------------------------------------------------------
# Selecting points.
# ---------------------------------------------------------------------------


class PointIdsList(QModel):
    points: list[ExtendedPointId]
    shard_key: Optional[ShardKeySelector] = None


class FilterSelector(QModel):
    filter: Annotated[Filter, NESTED]
    shard_key: Optional[ShardKeySelector] = None


PointsSelectorUnion = Untagged("PointsSelector", PointIdsList, FilterSelector)


class PointsSelector(RootModel[PointsSelectorUnion]):
    """The delete / clear-payload body: PointIdsList or FilterSelector
    (``parse`` hands back the variant itself)."""

    __serde_position__ = "none"


SELECTOR_ERROR = "Either list of point ids or filter must be provided"


class SetPayload(QModel):
    payload: Payload
    points: Optional[list[ExtendedPointId]] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    shard_key: Optional[ShardKeySelector] = None
    key: Optional[JsonPath] = None

    @model_validator(mode="after")
    def _selector(self):
        # Qdrant's SetPayloadShadow try_from: a Format error, not a validation one.
        if self.points is None and self.filter is None:
            raise serde_error(SELECTOR_ERROR, "struct")
        return self


class DeletePayload(QModel):
    keys: list[JsonPath]
    points: Optional[list[ExtendedPointId]] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    shard_key: Optional[ShardKeySelector] = None

    @model_validator(mode="after")
    def _selector(self):
        if self.points is None and self.filter is None:
            raise serde_error(SELECTOR_ERROR, "struct")
        return self


# ---------------------------------------------------------------------------
# Vectors of existing points.
# ---------------------------------------------------------------------------


class PointVectors(QModel):
    id: ExtendedPointId
    vector: Annotated[VectorStruct, Field(validation_alias=AliasChoices("vector", "vectors"))]

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        if vector_struct_is_empty(self.vector):
            return [(f"{path}.vector" if path else "vector", "must specify vectors to update for point")]
        # Qdrant validates the VectorStruct in place: no "vector" segment.
        return vector_struct_errors(self.vector, path)


class UpdateVectors(QModel):
    points: Annotated[list[PointVectors], NESTED, Length(min=1, message="must specify points to update")]
    shard_key: Optional[ShardKeySelector] = None


class DeleteVectors(QModel):
    points: Optional[list[ExtendedPointId]] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    vector: Annotated[
        list[Str],
        Length(min=1, message="must specify vector names to delete"),
        Field(validation_alias=AliasChoices("vector", "vectors")),
    ]
    shard_key: Optional[ShardKeySelector] = None


# ---------------------------------------------------------------------------
# Batch update.
# ---------------------------------------------------------------------------


class UpsertOperation(QModel):
    upsert: Annotated[PointInsertOperationsUnion, NESTED]


class DeleteOperation(QModel):
    delete: Annotated[PointsSelectorUnion, NESTED]


class SetPayloadOperation(QModel):
    set_payload: Annotated[SetPayload, NESTED]


class OverwritePayloadOperation(QModel):
    overwrite_payload: Annotated[SetPayload, NESTED]


class DeletePayloadOperation(QModel):
    delete_payload: Annotated[DeletePayload, NESTED]


class ClearPayloadOperation(QModel):
    clear_payload: Annotated[PointsSelectorUnion, NESTED]


class UpdateVectorsOperation(QModel):
    update_vectors: Annotated[UpdateVectors, NESTED]


class DeleteVectorsOperation(QModel):
    delete_vectors: Annotated[DeleteVectors, NESTED]


UpdateOperation = Untagged(
    "UpdateOperation",
    UpsertOperation,
    DeleteOperation,
    SetPayloadOperation,
    OverwritePayloadOperation,
    DeletePayloadOperation,
    ClearPayloadOperation,
    UpdateVectorsOperation,
    DeleteVectorsOperation,
)


class UpdateOperations(QModel):
    operations: Annotated[list[UpdateOperation], NESTED]


# ---------------------------------------------------------------------------
# Reads.
# ---------------------------------------------------------------------------


class PointRequest(QModel):
    __flatten__ = "point_request"
    __serde_position__ = "none"
    ids: list[ExtendedPointId]
    with_payload: Optional[WithPayloadInterface] = None
    with_vector: WithVector = WITH_VECTOR  # not an Option in Qdrant: null is refused
    shard_key: Optional[ShardKeySelector] = None


Direction = enum("asc", "desc")
StartFrom = Untagged("StartFrom", I64, F64, DateTime)


class OrderBy(QModel):
    key: JsonPath
    direction: Optional[Direction] = None
    start_from: Optional[StartFrom] = None


OrderByInterface = Untagged("OrderByInterface", JsonPath, OrderBy)


class ScrollRequest(QModel):
    __flatten__ = "scroll_request"
    __serde_position__ = "none"
    offset: Optional[ExtendedPointId] = None
    limit: Annotated[Optional[USize], Range(min=1)] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    with_payload: Optional[WithPayloadInterface] = None
    with_vector: WithVector = WITH_VECTOR
    order_by: Optional[OrderByInterface] = None
    shard_key: Optional[ShardKeySelector] = None


class CountRequest(QModel):
    __flatten__ = "count_request"
    __serde_position__ = "none"
    filter: Annotated[Optional[Filter], NESTED] = None
    exact: Bool = None  # a plain bool (default true) in Qdrant: null is refused
    shard_key: Optional[ShardKeySelector] = None


class FacetRequest(QModel):
    __flatten__ = "facet_request"
    __serde_position__ = "none"
    key: JsonPath
    limit: Annotated[Optional[USize], Range(min=1)] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    exact: Optional[Bool] = None
    shard_key: Optional[ShardKeySelector] = None
