"""The classic search family: search, recommend, discover (single, batch,
groups) and the distance matrix, as Qdrant 1.15 spells them
(lib/collection operations/types.rs, lib/api rest schema.rs).

Each single request is, in Qdrant, a thin struct around a flattened
``*Internal`` struct; validation paths carry the inner struct's field name
(``search_request.limit``), which ``__flatten__`` reproduces.
"""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import AliasChoices, Field

from gateway.models.base import NESTED, Prefix, QModel, Range
from gateway.models.filters import Filter
from gateway.models.points import (
    WITH_VECTOR,
    DenseVector,
    ShardKeySelector,
    SparseVector,
    WithPayloadInterface,
    WithVector,
)
from gateway.models.serde import (
    F32,
    F64,
    U32,
    Bool,
    ExtendedPointId,
    JsonPath,
    Str,
    USize,
    Untagged,
    enum,
)

RecommendStrategy = enum("average_vector", "best_score", "sum_scores")
LIMIT_ALIASES = AliasChoices("limit", "top")


class QuantizationSearchParams(QModel):
    ignore: Optional[Bool] = None
    rescore: Optional[Bool] = None
    oversampling: Annotated[Optional[F64], Range(min=1.0)] = None


class SearchParams(QModel):
    hnsw_ef: Optional[USize] = None
    exact: Optional[Bool] = None
    quantization: Annotated[Optional[QuantizationSearchParams], NESTED] = None
    indexed_only: Optional[Bool] = None


class LookupLocation(QModel):
    collection: Str
    vector: Optional[Str] = None
    shard_key: Optional[ShardKeySelector] = None


class WithLookup(QModel):
    collection: Str
    with_payload: Optional[WithPayloadInterface] = None
    with_vectors: Optional[WithVector] = Field(default=None, validation_alias=AliasChoices("with_vectors", "with_vector"))


WithLookupInterface = Untagged("WithLookupInterface", Str, WithLookup)


class NamedVector(QModel):
    name: Str
    vector: DenseVector


class NamedSparseVector(QModel):
    name: Str
    vector: Annotated[SparseVector, NESTED]


NamedVectorStruct = Untagged("NamedVectorStruct", DenseVector, NamedVector, NamedSparseVector)

# ---------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------


class SearchRequest(QModel):
    __flatten__ = "search_request"
    __serde_position__ = "none"
    vector: Annotated[NamedVectorStruct, NESTED]
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    limit: Annotated[USize, Range(min=1), Field(validation_alias=LIMIT_ALIASES)]
    offset: Optional[USize] = None
    with_payload: Optional[WithPayloadInterface] = None
    with_vector: Optional[WithVector] = WITH_VECTOR
    score_threshold: Optional[F32] = None
    shard_key: Optional[ShardKeySelector] = None


class SearchRequestBatch(QModel):
    __serde_position__ = "items"  # the items are flattened requests
    searches: Annotated[list[SearchRequest], NESTED]


class SearchGroupsRequest(QModel):
    __flatten__ = "search_group_request"
    __serde_position__ = "none"
    vector: Annotated[NamedVectorStruct, NESTED]
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    with_payload: Optional[WithPayloadInterface] = None
    with_vector: Optional[WithVector] = WITH_VECTOR
    score_threshold: Optional[F32] = None
    group_by: Annotated[JsonPath, Prefix("group_request")]
    group_size: Annotated[U32, Range(min=1), Prefix("group_request")]
    limit: Annotated[U32, Range(min=1), Prefix("group_request")]
    with_lookup: Annotated[Optional[WithLookupInterface], Prefix("group_request")] = None
    shard_key: Optional[ShardKeySelector] = None


# ---------------------------------------------------------------------------
# Recommend.
# ---------------------------------------------------------------------------

RecommendExample = Untagged("RecommendExample", ExtendedPointId, DenseVector, SparseVector)
UsingVector = Untagged("UsingVector", Str)


class RecommendRequest(QModel):
    __flatten__ = "recommend_request"
    __serde_position__ = "none"
    positive: Annotated[Optional[list[RecommendExample]], NESTED] = None
    negative: Annotated[Optional[list[RecommendExample]], NESTED] = None
    strategy: Optional[RecommendStrategy] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    limit: Annotated[USize, Range(min=1), Field(validation_alias=LIMIT_ALIASES)]
    offset: Optional[USize] = None
    with_payload: Optional[WithPayloadInterface] = None
    with_vector: Optional[WithVector] = WITH_VECTOR
    score_threshold: Optional[F32] = None
    using: Optional[UsingVector] = None
    lookup_from: Optional[LookupLocation] = None
    shard_key: Optional[ShardKeySelector] = None


class RecommendRequestBatch(QModel):
    __serde_position__ = "items"  # the items are flattened requests
    searches: Annotated[list[RecommendRequest], NESTED]


class RecommendGroupsRequest(QModel):
    """Qdrant does not mark this request's examples or group parameters
    ``nested`` for validation, so -- as in Qdrant -- only filter and params are
    range-checked here."""

    __flatten__ = "recommend_group_request"
    __serde_position__ = "none"
    positive: Optional[list[RecommendExample]] = None
    negative: Optional[list[RecommendExample]] = None
    strategy: Optional[RecommendStrategy] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    with_payload: Optional[WithPayloadInterface] = None
    with_vector: Optional[WithVector] = WITH_VECTOR
    score_threshold: Optional[F32] = None
    using: Optional[UsingVector] = None
    lookup_from: Optional[LookupLocation] = None
    group_by: Annotated[JsonPath, Prefix("group_request")]
    group_size: Annotated[U32, Prefix("group_request")]
    limit: Annotated[U32, Prefix("group_request")]
    with_lookup: Annotated[Optional[WithLookupInterface], Prefix("group_request")] = None
    shard_key: Optional[ShardKeySelector] = None


# ---------------------------------------------------------------------------
# Discover.
# ---------------------------------------------------------------------------


class ContextExamplePair(QModel):
    positive: Annotated[RecommendExample, NESTED]
    negative: Annotated[RecommendExample, NESTED]


class DiscoverRequest(QModel):
    __flatten__ = "discover_request"
    __serde_position__ = "none"
    target: Annotated[Optional[RecommendExample], NESTED] = None
    context: Annotated[Optional[list[ContextExamplePair]], NESTED] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    limit: Annotated[USize, Range(min=1), Field(validation_alias=LIMIT_ALIASES)]
    offset: Optional[USize] = None
    with_payload: Optional[WithPayloadInterface] = None
    with_vector: Optional[WithVector] = WITH_VECTOR
    using: Optional[UsingVector] = None
    lookup_from: Optional[LookupLocation] = None
    shard_key: Optional[ShardKeySelector] = None


class DiscoverRequestBatch(QModel):
    __serde_position__ = "items"  # the items are flattened requests
    searches: Annotated[list[DiscoverRequest], NESTED]


# ---------------------------------------------------------------------------
# Distance matrix.
# ---------------------------------------------------------------------------


class SearchMatrixRequest(QModel):
    __flatten__ = "search_request"
    __serde_position__ = "none"
    filter: Annotated[Optional[Filter], NESTED] = None
    sample: Annotated[Optional[USize], Range(min=2)] = None
    limit: Annotated[Optional[USize], Range(min=1)] = None
    using: Optional[Str] = None
    shard_key: Optional[ShardKeySelector] = None
