"""Collection requests: create, update, aliases, payload indexes.

Mirrors Qdrant 1.15's ``CreateCollection``/``UpdateCollection``
(lib/storage collection_meta_ops.rs) and the config diffs
(lib/collection config_diff.rs). Every option Qdrant accepts is accepted and
typed -- quantization, sparse vectors, strict mode -- even where Shoal later
ignores or refuses it, so that a body Qdrant would take parses here too.
"""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import AliasChoices, Field, PlainValidator, model_validator

from gateway.models.base import NESTED, QModel, Range, schema_error
from gateway.models.serde import (
    F32,
    F64,
    U64,
    Bool,
    JsonPath,
    NonZeroU32,
    NonZeroU64,
    Str,
    U32,
    USize,
    Untagged,
    enum,
    invalid_type,
    one_of,
    serde_error,
)

Distance = enum("Cosine", "Euclid", "Dot", "Manhattan")
Datatype = enum("float32", "uint8", "float16")
ShardingMethod = enum("auto", "custom")
ScalarType = enum("int8")
CompressionRatio = enum("x4", "x8", "x16", "x32", "x64")
BinaryQuantizationEncoding = enum("one_bit", "two_bits", "one_and_half_bits")
BinaryQuantizationQueryEncoding = enum("default", "binary", "scalar4bits", "scalar8bits")
MultiVectorComparator = enum("max_sim")
Modifier = enum("none", "idf")
SnapshotPriority = enum("no_sync", "snapshot", "replica")

# ---------------------------------------------------------------------------
# Config diffs.
# ---------------------------------------------------------------------------


class HnswConfigDiff(QModel):
    m: Optional[USize] = None
    ef_construct: Annotated[Optional[USize], Range(min=4)] = None
    full_scan_threshold: Annotated[Optional[USize], Range(min=10)] = None
    max_indexing_threads: Optional[USize] = None
    on_disk: Optional[Bool] = None
    payload_m: Optional[USize] = None


class WalConfigDiff(QModel):
    wal_capacity_mb: Annotated[Optional[USize], Range(min=1)] = None
    wal_segments_ahead: Optional[USize] = None


MaxOptimizationThreads = Untagged("MaxOptimizationThreads", enum("auto"), USize)


class OptimizersConfigDiff(QModel):
    deleted_threshold: Optional[F64] = None
    vacuum_min_vector_number: Optional[USize] = None
    default_segment_number: Optional[USize] = None
    max_segment_size: Annotated[Optional[USize], Range(min=1)] = None
    memmap_threshold: Optional[USize] = None
    indexing_threshold: Optional[USize] = None
    flush_interval_sec: Optional[U64] = None
    max_optimization_threads: Optional[MaxOptimizationThreads] = None


class CollectionParamsDiff(QModel):
    replication_factor: Optional[NonZeroU32] = None
    write_consistency_factor: Optional[NonZeroU32] = None
    read_fan_out_factor: Optional[U32] = None
    on_disk_payload: Optional[Bool] = None


# ---------------------------------------------------------------------------
# Quantization.
# ---------------------------------------------------------------------------


class ScalarQuantizationConfig(QModel):
    type: ScalarType
    quantile: Annotated[Optional[F32], Range(min=0.5, max=1.0, f32=True)] = None
    always_ram: Optional[Bool] = None


class ScalarQuantization(QModel):
    scalar: Annotated[ScalarQuantizationConfig, NESTED]


class ProductQuantizationConfig(QModel):
    compression: CompressionRatio
    always_ram: Optional[Bool] = None


class ProductQuantization(QModel):
    product: Annotated[ProductQuantizationConfig, NESTED]


class BinaryQuantizationConfig(QModel):
    always_ram: Optional[Bool] = None
    encoding: Optional[BinaryQuantizationEncoding] = None
    query_encoding: Optional[BinaryQuantizationQueryEncoding] = None


class BinaryQuantization(QModel):
    binary: Annotated[BinaryQuantizationConfig, NESTED]


QuantizationConfig = Untagged("QuantizationConfig", ScalarQuantization, ProductQuantization, BinaryQuantization)
QuantizationConfigDiff = Untagged(
    "QuantizationConfigDiff", ScalarQuantization, ProductQuantization, BinaryQuantization, enum("Disabled")
)

# ---------------------------------------------------------------------------
# Vectors.
# ---------------------------------------------------------------------------


class MultiVectorConfig(QModel):
    comparator: MultiVectorComparator


class VectorParams(QModel):
    # NonZeroU64 (0 is a Format error) plus Qdrant's hand-written 1..=65536 check:
    # "vectors.size: value 65537 invalid, must be from 1 to 65536".
    size: Annotated[NonZeroU64, Range(min=1, max=65536)]
    distance: Distance
    hnsw_config: Annotated[Optional[HnswConfigDiff], NESTED] = None
    quantization_config: Annotated[
        Optional[QuantizationConfig], NESTED, Field(validation_alias=AliasChoices("quantization_config", "quantization"))
    ] = None
    on_disk: Optional[Bool] = None
    datatype: Optional[Datatype] = None
    multivector_config: Optional[MultiVectorConfig] = None


VectorsConfig = Untagged("VectorsConfig", VectorParams, dict[str, VectorParams])


class VectorParamsDiff(QModel):
    hnsw_config: Annotated[Optional[HnswConfigDiff], NESTED] = None
    quantization_config: Annotated[
        Optional[QuantizationConfigDiff],
        NESTED,
        Field(validation_alias=AliasChoices("quantization_config", "quantization")),
    ] = None
    on_disk: Optional[Bool] = None


class SparseIndexParams(QModel):
    full_scan_threshold: Optional[USize] = None
    on_disk: Optional[Bool] = None
    datatype: Optional[Datatype] = None


class SparseVectorParams(QModel):
    index: Optional[SparseIndexParams] = None
    modifier: Optional[Modifier] = None


class StrictModeMultivector(QModel):
    max_vectors: Optional[USize] = None


class StrictModeSparse(QModel):
    max_length: Optional[USize] = None


class StrictModeConfig(QModel):
    """Qdrant 1.15's StrictModeConfig (lib/segment types.rs), also the PATCH diff:
    each field given replaces the stored one (config_diff.rs), ``gateway.strict``
    merges and enforces it."""

    enabled: Optional[Bool] = None
    max_query_limit: Annotated[Optional[USize], Range(min=1)] = None
    max_timeout: Annotated[Optional[USize], Range(min=1)] = None
    unindexed_filtering_retrieve: Optional[Bool] = None
    unindexed_filtering_update: Optional[Bool] = None
    search_max_hnsw_ef: Optional[USize] = None
    search_allow_exact: Optional[Bool] = None
    search_max_oversampling: Optional[F64] = None
    upsert_max_batchsize: Optional[USize] = None
    max_collection_vector_size_bytes: Optional[USize] = None
    read_rate_limit: Annotated[Optional[USize], Range(min=1)] = None
    write_rate_limit: Annotated[Optional[USize], Range(min=1)] = None
    max_collection_payload_size_bytes: Optional[USize] = None
    max_points_count: Annotated[Optional[USize], Range(min=1)] = None
    filter_max_conditions: Optional[USize] = None
    condition_max_size: Optional[USize] = None
    multivector_config: Optional[dict[str, StrictModeMultivector]] = None
    sparse_config: Optional[dict[str, StrictModeSparse]] = None
    max_payload_index_count: Optional[USize] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        """``max_vectors`` and ``max_length`` are ``range(min = 1)``. Both maps are a
        ``#[serde(flatten)] config: BTreeMap`` validated nested, which the validator
        crate reports as a list: ``multivector_config.config[i]``, i counting the
        names in sorted order."""
        out = []
        for field, attr in (("multivector_config", "max_vectors"), ("sparse_config", "max_length")):
            for i, name in enumerate(sorted(getattr(self, field) or {})):
                value = getattr(getattr(self, field)[name], attr)
                msg = Range(min=1).check(value) if value is not None else None
                if msg is not None:
                    where = f"{field}.config[{i}].{attr}"
                    out.append((f"{path}.{where}" if path else where, msg))
        return out


class InitFrom(QModel):
    collection: Str


class CreateCollection(QModel):
    vectors: Annotated[Optional[VectorsConfig], NESTED] = None
    shard_number: Annotated[Optional[U32], Range(min=1)] = None
    sharding_method: Optional[ShardingMethod] = None
    replication_factor: Annotated[Optional[U32], Range(min=1)] = None
    write_consistency_factor: Annotated[Optional[U32], Range(min=1)] = None
    on_disk_payload: Optional[Bool] = None
    hnsw_config: Annotated[Optional[HnswConfigDiff], NESTED] = None
    wal_config: Annotated[Optional[WalConfigDiff], NESTED] = None
    optimizers_config: Annotated[
        Optional[OptimizersConfigDiff],
        NESTED,
        Field(validation_alias=AliasChoices("optimizers_config", "optimizer_config")),
    ] = None
    init_from: Optional[InitFrom] = None
    quantization_config: Annotated[
        Optional[QuantizationConfig], NESTED, Field(validation_alias=AliasChoices("quantization_config", "quantization"))
    ] = None
    sparse_vectors: Annotated[Optional[dict[str, SparseVectorParams]], NESTED] = None
    strict_mode_config: Annotated[Optional[StrictModeConfig], NESTED] = None


class UpdateCollection(QModel):
    vectors: Annotated[Optional[dict[str, VectorParamsDiff]], NESTED] = None
    optimizers_config: Annotated[
        Optional[OptimizersConfigDiff],
        NESTED,
        Field(validation_alias=AliasChoices("optimizers_config", "optimizer_config")),
    ] = None
    params: Optional[CollectionParamsDiff] = None
    hnsw_config: Annotated[Optional[HnswConfigDiff], NESTED] = None
    quantization_config: Annotated[
        Optional[QuantizationConfigDiff],
        NESTED,
        Field(validation_alias=AliasChoices("quantization_config", "quantization")),
    ] = None
    sparse_vectors: Annotated[Optional[dict[str, SparseVectorParams]], NESTED] = None
    strict_mode_config: Annotated[Optional[StrictModeConfig], NESTED] = None


# ---------------------------------------------------------------------------
# Aliases.
# ---------------------------------------------------------------------------


class CreateAlias(QModel):
    collection_name: Str
    alias_name: Str


class CreateAliasOperation(QModel):
    create_alias: CreateAlias


class DeleteAlias(QModel):
    alias_name: Str


class DeleteAliasOperation(QModel):
    delete_alias: DeleteAlias


class RenameAlias(QModel):
    old_alias_name: Str
    new_alias_name: Str


class RenameAliasOperation(QModel):
    rename_alias: RenameAlias


AliasOperations = Untagged("AliasOperations", CreateAliasOperation, DeleteAliasOperation, RenameAliasOperation)


class ChangeAliasesOperation(QModel):
    actions: list[AliasOperations]


# ---------------------------------------------------------------------------
# Payload indexes.
# ---------------------------------------------------------------------------

PayloadSchemaType = enum("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid")

def aliased_enum(variants: dict[str, str | None]):
    """A Rust enum of unit variants, each with an optional ``#[serde(alias)]``: either
    spelling reads, and the variant's own name is kept (the name Qdrant serialises
    back, in collection info)."""
    names = tuple(variants)
    spelled = {name: name for name in names} | {alias: name for name, alias in variants.items() if alias}

    def check(value) -> str:
        if type(value) is str:
            if value in spelled:
                return spelled[value]
            raise serde_error(f"unknown variant `{value}`, expected {one_of(names)}")
        raise serde_error(invalid_type(value, "string or map"))

    return Annotated[str, PlainValidator(check)]


# Qdrant's Language and SnowballLanguage (lib/segment/src/data_types/index.rs), with
# their ISO-code aliases.
LANGUAGES = {
    "arabic": "ar", "azerbaijani": "az", "basque": "eu", "bengali": "bn", "catalan": "ca",
    "chinese": "zh", "danish": "da", "dutch": "nl", "english": "en", "finnish": "fi",
    "french": "fr", "german": "de", "greek": "el", "hebrew": "he", "hinglish": "hi-en",
    "hungarian": "hu", "indonesian": "id", "italian": "it", "japanese": "jp", "kazakh": "kk",
    "nepali": "ne", "norwegian": "no", "portuguese": "pt", "romanian": "ro", "russian": "ru",
    "slovene": "sl", "spanish": "es", "swedish": "sv", "tajik": "tg", "turkish": "tr",
}  # fmt: skip
SNOWBALL_LANGUAGES = {
    "arabic": "ar", "armenian": "hy", "danish": "da", "dutch": "nl", "english": "en",
    "finnish": "fi", "french": "fr", "german": "de", "greek": "el", "hungarian": "hu",
    "italian": "it", "norwegian": "no", "portuguese": "pt", "romanian": "ro", "russian": "ru",
    "spanish": "es", "swedish": "sv", "tamil": "ta", "turkish": "tr",
}  # fmt: skip
Language = aliased_enum(LANGUAGES)
SnowballLanguage = aliased_enum(SNOWBALL_LANGUAGES)


KeywordIndexType = enum("keyword")
IntegerIndexType = enum("integer")
FloatIndexType = enum("float")
GeoIndexType = enum("geo")
TextIndexType = enum("text")
BoolIndexType = enum("bool")
DatetimeIndexType = enum("datetime")
UuidIndexType = enum("uuid")
TokenizerType = enum("prefix", "whitespace", "word", "multilingual")
Snowball = enum("snowball")


class KeywordIndexParams(QModel):
    type: KeywordIndexType
    is_tenant: Optional[Bool] = None
    on_disk: Optional[Bool] = None


class IntegerIndexParams(QModel):
    type: IntegerIndexType
    lookup: Optional[Bool] = None
    range: Optional[Bool] = None
    is_principal: Optional[Bool] = None
    on_disk: Optional[Bool] = None

    def qdrant_checks(self, path: str) -> list[tuple[str, str]]:
        if self.lookup is False and self.range is False:
            where = f"{path}.__all__" if path else "__all__"
            return [(where, schema_error("the 'lookup' and 'range' capabilities can't be both disabled"))]
        return []


class FloatIndexParams(QModel):
    type: FloatIndexType
    is_principal: Optional[Bool] = None
    on_disk: Optional[Bool] = None


class GeoIndexParams(QModel):
    type: GeoIndexType
    on_disk: Optional[Bool] = None


class StopwordsSet(QModel):
    """Both fields are ``BTreeSet``s in Qdrant: kept sorted and without repeats (the
    languages in the enum's order), and left out when null, as Qdrant reports them."""

    languages: Optional[list[Language]] = None
    custom: Optional[list[Str]] = None

    @model_validator(mode="after")
    def _as_sets(self):
        order = {name: i for i, name in enumerate(LANGUAGES)}
        if self.languages is not None:
            self.languages = sorted(set(self.languages), key=order.__getitem__)
        if self.custom is not None:
            self.custom = sorted(set(self.custom))  # Rust orders Strings by UTF-8 bytes: code points
        self.__pydantic_fields_set__ -= {f for f in ("languages", "custom") if getattr(self, f) is None}
        return self


class SnowballParams(QModel):
    type: Snowball
    language: SnowballLanguage


StopwordsInterface = Untagged("StopwordsInterface", Language, StopwordsSet)
StemmingAlgorithm = Untagged("StemmingAlgorithm", SnowballParams)


class TextIndexParams(QModel):
    type: TextIndexType
    tokenizer: Optional[TokenizerType] = None
    min_token_len: Optional[USize] = None
    max_token_len: Optional[USize] = None
    lowercase: Optional[Bool] = None
    phrase_matching: Optional[Bool] = None
    stopwords: Optional[StopwordsInterface] = None
    on_disk: Optional[Bool] = None
    stemmer: Optional[StemmingAlgorithm] = None


class BoolIndexParams(QModel):
    type: BoolIndexType
    on_disk: Optional[Bool] = None


class DatetimeIndexParams(QModel):
    type: DatetimeIndexType
    is_principal: Optional[Bool] = None
    on_disk: Optional[Bool] = None


class UuidIndexParams(QModel):
    type: UuidIndexType
    is_tenant: Optional[Bool] = None
    on_disk: Optional[Bool] = None


PayloadSchemaParams = Untagged(
    "PayloadSchemaParams",
    KeywordIndexParams,
    IntegerIndexParams,
    FloatIndexParams,
    GeoIndexParams,
    TextIndexParams,
    BoolIndexParams,
    DatetimeIndexParams,
    UuidIndexParams,
)
PayloadFieldSchema = Untagged("PayloadFieldSchema", PayloadSchemaType, PayloadSchemaParams)


class CreateFieldIndex(QModel):
    field_name: JsonPath
    field_schema: Annotated[
        Optional[PayloadFieldSchema], NESTED, Field(validation_alias=AliasChoices("field_schema", "field_type"))
    ] = None



# ---------------------------------------------------------------------------
# Snapshots.
# ---------------------------------------------------------------------------


class SnapshotRecover(QModel):
    """PUT /collections/{name}/snapshots/recover. ``location`` is a URL in Qdrant
    (``file://`` or ``http(s)://``); the route reads it."""

    location: Str
    priority: Optional[SnapshotPriority] = None
    checksum: Optional[Str] = None
    api_key: Optional[Str] = None


class ShardSnapshotRecover(SnapshotRecover):
    """PUT /collections/{name}/shards/{shard_id}/snapshots/recover. Qdrant's
    ``location`` is an untagged URL or path, so any text reads; the route tells
    them apart."""
