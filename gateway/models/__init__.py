"""Qdrant 1.15 REST request bodies as pydantic models.

Use ``parse(Model, body_bytes)``: it returns the validated model or raises
``gateway.errors.FormatError`` (400) / ``ValidationError`` (422) with Qdrant's
exact texts. Fields carry Qdrant's names; ``dump(model)`` (=
``model_dump(by_alias=True, exclude_unset=True)``) gives back the request as
Qdrant-shaped JSON containing only what the client sent, with three
normalisations Qdrant itself applies: point ids canonical (UUIDs hyphenated
lower-case), aliases resolved to the canonical field name (``top`` -> ``limit``,
``with_vectors`` -> ``with_vector``, ``vectors`` -> ``vector``, ...), and
one-or-many fields (``must``/``should``/``must_not``, ``prefetch``,
``context``) always lists.

Layout: ``serde`` (leaf types failing with serde's words), ``jsontext`` (serde_json
syntax errors and positions), ``base`` (validate rules), ``filters``,
``collections``, ``points``, ``search``, ``query``, ``parse``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from gateway.models.base import QModel, qdrant_validate
from gateway.models.cluster import ClusterOperations
from gateway.models.collections import (
    BinaryQuantization,
    ChangeAliasesOperation,
    CollectionParamsDiff,
    CreateAlias,
    CreateAliasOperation,
    CreateCollection,
    CreateFieldIndex,
    DeleteAlias,
    DeleteAliasOperation,
    HnswConfigDiff,
    OptimizersConfigDiff,
    ProductQuantization,
    RenameAlias,
    RenameAliasOperation,
    ScalarQuantization,
    ShardSnapshotRecover,
    SnapshotRecover,
    SparseVectorParams,
    StrictModeConfig,
    UpdateCollection,
    VectorParams,
    VectorParamsDiff,
    WalConfigDiff,
)
from gateway.models.filters import (
    DatetimeRange,
    FieldCondition,
    Filter,
    GeoBoundingBox,
    GeoLineString,
    GeoPoint,
    GeoPolygon,
    GeoRadius,
    HasIdCondition,
    HasVectorCondition,
    IsEmptyCondition,
    IsNullCondition,
    MatchAny,
    MatchExcept,
    MatchPhrase,
    MatchText,
    MatchValue,
    MinShould,
    Nested,
    NestedCondition,
    PayloadField,
    Range,
    ValuesCount,
)
from gateway.models.parse import decode, parse, serde_message, validated
from gateway.models.points import (
    Batch,
    CountRequest,
    DeletePayload,
    DeleteVectors,
    FacetRequest,
    FilterSelector,
    OrderBy,
    PayloadSelectorExclude,
    PayloadSelectorInclude,
    PointIdsList,
    PointInsertOperations,
    PointRequest,
    PointsBatch,
    PointsList,
    PointsSelector,
    PointStruct,
    PointVectors,
    ScrollRequest,
    SetPayload,
    SparseVector,
    UpdateOperations,
    UpdateVectors,
)
from gateway.models.query import (
    ContextPair,
    ContextQuery,
    DiscoverInput,
    DiscoverQuery,
    FormulaQuery,
    FusionQuery,
    Mmr,
    NearestQuery,
    OrderByQuery,
    Prefetch,
    QueryGroupsRequest,
    QueryRequest,
    QueryRequestBatch,
    RecommendInput,
    RecommendQuery,
    SampleQuery,
)
from gateway.models.search import (
    ContextExamplePair,
    DiscoverRequest,
    DiscoverRequestBatch,
    LookupLocation,
    NamedSparseVector,
    NamedVector,
    QuantizationSearchParams,
    RecommendGroupsRequest,
    RecommendRequest,
    RecommendRequestBatch,
    SearchGroupsRequest,
    SearchMatrixRequest,
    SearchParams,
    SearchRequest,
    SearchRequestBatch,
    WithLookup,
)
from gateway.models.serde import MAX_U64, canonical_id, parse_uuid
from gateway.models.shapes import ShapeCache
from shard.types import BadInput

_U64_TEXT = re.compile(r"\+?[0-9]+")


def path_point_id(text: str) -> int | str:
    """A point id given in a URL path (GET /collections/{c}/points/{id}), read as
    Qdrant's ``ExtendedPointId::from_str``: a u64 (leading ``+`` and zeros
    allowed) or a UUID in any form the uuid crate parses. Otherwise BadInput
    with Qdrant's text ``Can not recognize "abc" as point id``."""
    if _U64_TEXT.fullmatch(text) and int(text) <= MAX_U64:
        return int(text)
    canonical = parse_uuid(text)
    if canonical is not None:
        return canonical
    raise BadInput(f'Can not recognize "{text}" as point id')


def dump(model: BaseModel) -> dict[str, Any]:
    """The request as Qdrant-shaped JSON: what the client sent, normalised.
    (``warnings=False``: the model was just validated, so pydantic's check of
    every value against its declared type finds nothing and costs ~12 %.)
    A request's dense ``vector`` is handed on as validated rather than copied
    float by float: that copy was 40 % of dumping a search."""
    vector = getattr(model, "vector", None)
    if type(vector) is list and vector and type(vector[0]) is float:
        data = model.model_dump(by_alias=True, exclude_unset=True, exclude={"vector"}, warnings=False)
        data["vector"] = vector
        return data
    return model.model_dump(by_alias=True, exclude_unset=True, warnings=False)


# Where a search or query body holds its dense query vector: such bodies are
# read by shape (``gateway.models.shapes``).
_SHAPES = {
    SearchRequest: ShapeCache((("vector",),)),
    QueryRequest: ShapeCache((("query",), ("query", "nearest")), nested="prefetch"),
}


def read(model_cls: type, body: bytes) -> dict[str, Any]:
    """``dump(parse(model_cls, body))``, the same result and the same errors;
    search and query bodies are read by shape, most of them without the whole
    pydantic reading."""
    data = decode(body)

    def whole() -> dict[str, Any]:
        return dump(validated(model_cls, data, body))

    shapes = _SHAPES.get(model_cls)
    return whole() if shapes is None else shapes.read(data, whole)


__all__ = [
    "Batch",
    "BinaryQuantization",
    "ChangeAliasesOperation",
    "ClusterOperations",
    "CollectionParamsDiff",
    "ContextExamplePair",
    "ContextPair",
    "ContextQuery",
    "CountRequest",
    "CreateAlias",
    "CreateAliasOperation",
    "CreateCollection",
    "CreateFieldIndex",
    "DatetimeRange",
    "DeleteAlias",
    "DeleteAliasOperation",
    "DeletePayload",
    "DeleteVectors",
    "DiscoverInput",
    "DiscoverQuery",
    "DiscoverRequest",
    "DiscoverRequestBatch",
    "FacetRequest",
    "FieldCondition",
    "Filter",
    "FilterSelector",
    "FormulaQuery",
    "FusionQuery",
    "GeoBoundingBox",
    "GeoLineString",
    "GeoPoint",
    "GeoPolygon",
    "GeoRadius",
    "HasIdCondition",
    "HasVectorCondition",
    "HnswConfigDiff",
    "IsEmptyCondition",
    "IsNullCondition",
    "LookupLocation",
    "MAX_U64",
    "MatchAny",
    "MatchExcept",
    "MatchPhrase",
    "MatchText",
    "MatchValue",
    "MinShould",
    "Mmr",
    "NamedSparseVector",
    "NamedVector",
    "NearestQuery",
    "Nested",
    "NestedCondition",
    "OptimizersConfigDiff",
    "OrderBy",
    "OrderByQuery",
    "PayloadField",
    "PayloadSelectorExclude",
    "PayloadSelectorInclude",
    "PointIdsList",
    "PointInsertOperations",
    "PointRequest",
    "PointStruct",
    "PointVectors",
    "PointsBatch",
    "PointsList",
    "PointsSelector",
    "Prefetch",
    "ProductQuantization",
    "QModel",
    "QuantizationSearchParams",
    "QueryGroupsRequest",
    "QueryRequest",
    "QueryRequestBatch",
    "Range",
    "RecommendGroupsRequest",
    "RecommendInput",
    "RecommendQuery",
    "RecommendRequest",
    "RecommendRequestBatch",
    "RenameAlias",
    "RenameAliasOperation",
    "SampleQuery",
    "ScalarQuantization",
    "ScrollRequest",
    "SearchGroupsRequest",
    "SearchMatrixRequest",
    "SearchParams",
    "SearchRequest",
    "ShardSnapshotRecover",
    "SnapshotRecover",
    "SearchRequestBatch",
    "SetPayload",
    "SparseVector",
    "SparseVectorParams",
    "StrictModeConfig",
    "UpdateCollection",
    "UpdateOperations",
    "UpdateVectors",
    "ValuesCount",
    "VectorParams",
    "VectorParamsDiff",
    "WalConfigDiff",
    "WithLookup",
    "canonical_id",
    "decode",
    "dump",
    "parse",
    "read",
    "parse_uuid",
    "path_point_id",
    "qdrant_validate",
    "serde_message",
]
