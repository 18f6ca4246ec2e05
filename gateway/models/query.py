"""The universal query API: QueryRequest (+Batch, +Groups), Prefetch and
every Query variant Qdrant 1.15 knows -- nearest (a bare vector or id, or
``{"nearest": ..., "mmr": ...}``), recommend, discover, context, order_by,
fusion, formula and sample (lib/api rest schema.rs).

``prefetch`` and ``context`` accept one item or a list, as Qdrant's
MaybeOneOrMany does, and always dump as lists.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import Field

from gateway.models.base import NESTED, Prefix, QModel, Range, schema_error
from gateway.models.filters import Condition, Filter, GeoPoint
from gateway.models.points import (
    WITH_VECTOR,
    DenseVector,
    Document,
    Image,
    InferenceObject,
    MultiDenseVector,
    OrderByInterface,
    ShardKeySelector,
    SparseVector,
    WithPayloadInterface,
    WithVector,
    multi_errors,
)
from gateway.models.search import LookupLocation, RecommendStrategy, SearchParams, WithLookupInterface
from gateway.models.serde import (
    F32,
    ExtendedPointId,
    JsonPath,
    OneOrMany,
    Payload,
    Str,
    USize,
    Untagged,
    enum,
)

VectorInput = Untagged(
    "VectorInput",
    DenseVector,
    SparseVector,
    MultiDenseVector,
    ExtendedPointId,
    Document,
    Image,
    InferenceObject,
)


def vector_input_errors(value: Any, path: str) -> list[tuple[str, str]]:
    """Qdrant's VectorInput::validate: sparse and multi-dense inputs have rules."""
    if isinstance(value, SparseVector):
        return value.qdrant_checks(path)
    if isinstance(value, list) and value and isinstance(value[0], list):
        return multi_errors(value, path)
    return []


# ---------------------------------------------------------------------------
# Query variants.
# ---------------------------------------------------------------------------


Fusion = enum("rrf", "dbsf")
Sample = enum("random")


class Mmr(QModel):
    diversity: Annotated[Optional[F32], Range(min=0.0, max=1.0, f32=True)] = None
    candidates_limit: Annotated[Optional[USize], Range(max=16_384)] = None


class NearestQuery(QModel):
    nearest: VectorInput
    mmr: Annotated[Optional[Mmr], NESTED] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return vector_input_errors(self.nearest, f"{path}.nearest" if path else "nearest")


class RecommendInput(QModel):
    positive: Optional[list[VectorInput]] = None
    negative: Optional[list[VectorInput]] = None
    strategy: Optional[RecommendStrategy] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        if not self.positive and not self.negative:
            where = f"{path}.positives, negatives" if path else "positives, negatives"
            return [(where, schema_error("At least one positive or negative vector/id must be provided"))]
        for item in [*(self.positive or []), *(self.negative or [])]:
            errs = vector_input_errors(item, path)
            if errs:
                return errs
        return []


class RecommendQuery(QModel):
    recommend: Annotated[RecommendInput, NESTED]


class ContextPair(QModel):
    positive: VectorInput
    negative: VectorInput

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return vector_input_errors(self.positive, path) or vector_input_errors(self.negative, path)


class DiscoverInput(QModel):
    target: VectorInput
    # Required (Qdrant's MaybeOneOrMany without a default) but may be null.
    context: Annotated[Optional[list[ContextPair]], OneOrMany, NESTED]

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return vector_input_errors(self.target, f"{path}.target" if path else "target")


class DiscoverQuery(QModel):
    discover: Annotated[DiscoverInput, NESTED]


class ContextQuery(QModel):
    context: Annotated[Optional[list[ContextPair]], OneOrMany]

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        for pair in self.context or []:
            errs = pair.qdrant_checks(f"{path}.context" if path else "context")
            if errs:
                return errs
        return []


class OrderByQuery(QModel):
    order_by: OrderByInterface


class FusionQuery(QModel):
    fusion: Fusion


class SampleQuery(QModel):
    sample: Sample


# --- formula expressions ----------------------------------------------------


class GeoDistanceParams(QModel):
    origin: GeoPoint
    to: JsonPath


class GeoDistance(QModel):
    geo_distance: GeoDistanceParams


class DatetimeExpression(QModel):
    datetime: Str


class DatetimeKeyExpression(QModel):
    datetime_key: JsonPath


class MultExpression(QModel):
    mult: list["Expression"]


class SumExpression(QModel):
    sum: list["Expression"]


class NegExpression(QModel):
    neg: "Expression"


class AbsExpression(QModel):
    abs: "Expression"


class DivParams(QModel):
    left: "Expression"
    right: "Expression"
    by_zero_default: Optional[F32] = None


class DivExpression(QModel):
    div: DivParams


class SqrtExpression(QModel):
    sqrt: "Expression"


class PowParams(QModel):
    base: "Expression"
    exponent: "Expression"


class PowExpression(QModel):
    pow: PowParams


class ExpExpression(QModel):
    exp: "Expression"


class Log10Expression(QModel):
    log10: "Expression"


class LnExpression(QModel):
    ln: "Expression"


class DecayParamsExpression(QModel):
    x: "Expression"
    target: Optional["Expression"] = None
    scale: Optional[F32] = None
    midpoint: Optional[F32] = None


class LinDecayExpression(QModel):
    lin_decay: DecayParamsExpression


class ExpDecayExpression(QModel):
    exp_decay: DecayParamsExpression


class GaussDecayExpression(QModel):
    gauss_decay: DecayParamsExpression


Expression = Untagged(
    "Expression",
    F32,
    Str,
    Condition,
    GeoDistance,
    DatetimeExpression,
    DatetimeKeyExpression,
    MultExpression,
    SumExpression,
    NegExpression,
    AbsExpression,
    DivExpression,
    SqrtExpression,
    PowExpression,
    ExpExpression,
    Log10Expression,
    LnExpression,
    LinDecayExpression,
    ExpDecayExpression,
    GaussDecayExpression,
)

for _model in (
    MultExpression,
    SumExpression,
    NegExpression,
    AbsExpression,
    DivParams,
    SqrtExpression,
    PowParams,
    ExpExpression,
    Log10Expression,
    LnExpression,
    DecayParamsExpression,
):
    _model.model_rebuild()


class FormulaQuery(QModel):
    formula: Expression
    defaults: Optional[Payload] = None


Query = Untagged(
    "Query",
    NearestQuery,
    RecommendQuery,
    DiscoverQuery,
    ContextQuery,
    OrderByQuery,
    FusionQuery,
    FormulaQuery,
    SampleQuery,
)

# Qdrant 1.15 gives this enum its own ``expecting`` text.
QueryInterface = Untagged(
    "QueryInterface", VectorInput, Query, expecting="Expected some form of vector, id, or a type of query"
)


def query_errors(value: Any, path: str) -> list[tuple[str, str]]:
    """QueryInterface::validate: a bare vector input or a Query variant."""
    if isinstance(value, QModel):
        return []  # a Query variant: walked as a nested model
    return vector_input_errors(value, path)


# ---------------------------------------------------------------------------
# Requests.
# ---------------------------------------------------------------------------


class Prefetch(QModel):
    prefetch: Annotated[Optional[list["Prefetch"]], OneOrMany, NESTED] = None
    query: Annotated[Optional[QueryInterface], NESTED] = None
    using: Optional[Str] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    score_threshold: Optional[F32] = None
    limit: Annotated[Optional[USize], Range(min=1)] = None
    lookup_from: Optional[LookupLocation] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return query_errors(self.query, f"{path}.query" if path else "query")


Prefetch.model_rebuild()


class QueryRequest(QModel):
    __flatten__ = "internal"
    __serde_position__ = "none"
    prefetch: Annotated[Optional[list[Prefetch]], OneOrMany, NESTED] = None
    query: Annotated[Optional[QueryInterface], NESTED] = None
    using: Optional[Str] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    score_threshold: Optional[F32] = None
    limit: Annotated[Optional[USize], Range(min=1)] = None
    offset: Optional[USize] = None
    with_vector: Optional[WithVector] = WITH_VECTOR
    with_payload: Optional[WithPayloadInterface] = None
    lookup_from: Optional[LookupLocation] = None
    shard_key: Optional[ShardKeySelector] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return query_errors(self.query, _join(path, "internal.query"))


class QueryRequestBatch(QModel):
    __serde_position__ = "items"  # the items are flattened requests
    searches: Annotated[list[QueryRequest], NESTED]


class QueryGroupsRequest(QModel):
    __flatten__ = "search_group_request"
    __serde_position__ = "none"
    prefetch: Annotated[Optional[list[Prefetch]], OneOrMany, NESTED] = None
    query: Annotated[Optional[QueryInterface], NESTED] = None
    using: Optional[Str] = None
    filter: Annotated[Optional[Filter], NESTED] = None
    params: Annotated[Optional[SearchParams], NESTED] = None
    score_threshold: Optional[F32] = None
    with_vector: Optional[WithVector] = Field(default=None)
    with_payload: Optional[WithPayloadInterface] = None
    lookup_from: Optional[LookupLocation] = None
    group_by: Annotated[JsonPath, Prefix("group_request")]
    group_size: Annotated[Optional[USize], Range(min=1), Prefix("group_request")] = None
    limit: Annotated[Optional[USize], Range(min=1), Prefix("group_request")] = None
    with_lookup: Annotated[Optional[WithLookupInterface], Prefix("group_request")] = None
    shard_key: Optional[ShardKeySelector] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        return query_errors(self.query, _join(path, "search_group_request.query"))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name

