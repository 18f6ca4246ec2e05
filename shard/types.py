"""The engine's vocabulary.

Everything a shard is asked to do, and everything it answers, is expressed in the
types of this module. The gateway converts Qdrant's REST models into these in one
place, so the engine never sees a REST envelope (Qdrant keeps the same border with
its `*Internal` types).

Conventions:
- A point id is an ``int`` (unsigned) or a ``str`` holding a UUID in its canonical
  hyphenated lower-case form. The gateway canonicalises ids before they reach a shard.
- The unnamed ("default") vector of a collection is the vector named ``""``.
- Filters travel as plain JSON-shaped dicts, exactly as Qdrant's REST API spells
  them, already validated by the gateway; ``shard.filters`` compiles them.
- Update operations are plain dicts (see ``Op`` below) so that the write-ahead log
  can encode them without pickling classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Union

import numpy as np

PointId = Union[int, str]
DEFAULT_VECTOR = ""

# ---------------------------------------------------------------------------
# Errors. The gateway maps each class to Qdrant's status code and text prefix.
# ---------------------------------------------------------------------------


class ShoalError(Exception):
    """Base class of the errors the engine raises on purpose."""


class BadInput(ShoalError):
    """The request is well-formed but wrong for this data: 400 "Wrong input: …".

    The message carries no "Wrong input: " prefix; the gateway adds it."""


class NotFound(ShoalError):
    """Something named by the request does not exist: 404 "Not found: …"."""


class PointNotFound(NotFound):
    """A point named by id does not exist: 404 "Not found: No point with id 7 found"."""

    def __init__(self, point_id: PointId):
        self.point_id = point_id
        super().__init__(f"No point with id {point_id} found")

    def __reduce__(self):
        # Crosses process boundaries (Ray, the shard socket): rebuild from the id.
        return (PointNotFound, (self.point_id,))


class Conflict(ShoalError):
    """The thing to create exists already: 409 "Wrong input: …" (no prefix in the message)."""


class ReplicationError(ShoalError):
    """A replicated write or a catch-up request that this shard refuses. Meant for
    the cluster layer, which acts on it (re-sends, fills a gap, starts a transfer);
    a client only sees one if that layer lets it through."""


class StaleEpoch(ReplicationError):
    """The write carries an older epoch than this shard has seen: it comes from a
    deposed primary (or a gateway that has not yet heard of the new one)."""

    def __init__(self, epoch: int, current: int):
        self.epoch = epoch
        self.current = current
        super().__init__(f"stale epoch {epoch}: this shard has seen epoch {current}")

    def __reduce__(self):
        return (StaleEpoch, (self.epoch, self.current))


class Diverged(ReplicationError):
    """A new primary's write lands on a sequence number this replica holds already:
    it applied writes of an older epoch that the new primary never had (the old
    primary's last, never acknowledged). Nothing changed; it needs a full transfer."""

    def __init__(self, seq: int, epoch: int, applied: int, applied_epoch: int):
        self.seq, self.epoch, self.applied, self.applied_epoch = seq, epoch, applied, applied_epoch
        super().__init__(f"diverged: seq {seq} of epoch {epoch} arrived where this replica holds seq {applied} "
                         f"of epoch {applied_epoch}")

    def __reduce__(self):
        return type(self), (self.seq, self.epoch, self.applied, self.applied_epoch)


class SequenceGap(ReplicationError):
    """A replicated write skips ahead: the shard needs ``expected`` first. Nothing changed."""

    def __init__(self, expected: int, got: int | None = None):
        self.expected = expected
        self.got = got
        super().__init__(f"sequence gap: expected seq {expected}" + ("" if got is None else f", got {got}"))

    def __reduce__(self):
        return (SequenceGap, (self.expected, self.got))


class LogTruncated(ReplicationError):
    """The log no longer holds the records after ``after_seq`` (it starts at
    ``first_seq``): a catch-up from there needs a full transfer."""

    def __init__(self, after_seq: int, first_seq: int):
        self.after_seq = after_seq
        self.first_seq = first_seq
        super().__init__(f"the log starts at seq {first_seq}: records after {after_seq} are gone")

    def __reduce__(self):
        return (LogTruncated, (self.after_seq, self.first_seq))


# ---------------------------------------------------------------------------
# Collection and shard configuration.
# ---------------------------------------------------------------------------


class Distance(str, Enum):
    COSINE = "Cosine"
    DOT = "Dot"
    EUCLID = "Euclid"
    MANHATTAN = "Manhattan"


@dataclass(frozen=True)
class HnswConfig:
    """HNSW parameters, with Qdrant's defaults.

    ``full_scan_threshold`` is in kilobytes of vector data, as in Qdrant: a search
    whose filtered candidate set holds fewer vector-kilobytes than this is scored
    exactly instead of through the graph.
    """

    m: int = 16
    ef_construct: int = 100
    full_scan_threshold: int = 10000
    max_indexing_threads: int = 0
    on_disk: bool = False
    payload_m: int | None = None

    def updated(self, diff: dict[str, Any] | None) -> HnswConfig:
        """A copy with the non-null fields of ``diff`` applied (Qdrant's HnswConfigDiff)."""
        if not diff:
            return self
        known = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in diff.items() if k in known and v is not None})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class OptimizersConfig:
    """Qdrant's optimizer settings. Shoal uses ``indexing_threshold`` (kilobytes of
    vectors below which a shard is searched exactly and builds no graph) and
    ``flush_interval_sec`` (how often a shard snapshots and trims its log); the rest
    are kept and reported so that configs round-trip."""

    deleted_threshold: float = 0.2
    vacuum_min_vector_number: int = 1000
    default_segment_number: int = 0
    max_segment_size: int | None = None
    memmap_threshold: int | None = None
    indexing_threshold: int | None = 20000
    flush_interval_sec: int = 5
    max_optimization_threads: int | None = None

    def updated(self, diff: dict[str, Any] | None) -> OptimizersConfig:
        if not diff:
            return self
        known = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in diff.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


QUANTIZATION_KINDS = ("scalar", "binary", "product")


@dataclass(frozen=True)
class Quantization:
    """How a dense vector's graph holds its vectors (Qdrant's ``quantization_config``,
    one of ``{"scalar": ...}``, ``{"binary": ...}``, ``{"product": ...}``):

    - scalar: int8, each value times one scale, chosen so that the ``quantile`` of the
      absolute values (all of them when unset) maps to 127; the rest are clipped;
    - binary: bits, one per dimension (its sign), two or one and a half by
      ``encoding``; ``query_encoding`` ``scalar4bits`` / ``scalar8bits`` scores the
      graph's candidates with the query in 4 or 8 bits (``shard.quantized``);
    - product: PQ codes, one byte per sub-vector of ``dim * 4 / compression`` ones
      (``compression`` x4 to x64 of the float32 bytes), scored by asymmetric distance
      (``shard.product``).

    ``always_ram`` is kept and reported: the quantized copy always lives in RAM.
    Scores of a quantized graph are approximations; ``rescore`` (on by default for
    binary only, as in Qdrant, whose ``default_rescoring`` is off for product too)
    scores its candidates again with the stored vectors."""

    kind: str
    quantile: float | None = None
    always_ram: bool | None = None
    compression: str | None = None
    encoding: str | None = None
    query_encoding: str | None = None

    @property
    def applied(self) -> bool:
        return self.kind in QUANTIZATION_KINDS

    @property
    def default_rescore(self) -> bool:
        return self.kind == "binary"

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in dataclasses.asdict(self).items() if k != "kind" and v is not None}
        if self.kind == "scalar":
            body = {"type": "int8", **body}
        return {self.kind: body}

    @staticmethod
    def from_json(data: Any) -> Quantization | None:
        """The config a collection or vector reports (None or "Disabled": none)."""
        if not isinstance(data, dict) or not data:
            return None
        (kind, body), = data.items()
        body = body or {}
        return Quantization(kind, quantile=body.get("quantile"), always_ram=body.get("always_ram"),
                            compression=body.get("compression"), encoding=body.get("encoding"),
                            query_encoding=body.get("query_encoding"))


@dataclass(frozen=True)
class QuantizationParams:
    """A search's ``params.quantization``: ``ignore`` the quantized graph's scores
    (its candidates are scored with the stored vectors), ``rescore`` them so, and
    ``oversampling``: ask the graph for that many times the limit first."""

    ignore: bool = False
    rescore: bool | None = None
    oversampling: float | None = None


@dataclass(frozen=True)
class VectorParams:
    """One named vector of a collection. ``hnsw_config`` is a diff over the
    collection's HNSW config, as in Qdrant. ``datatype`` (float32, float16, uint8)
    is how a multivector's rows are stored and scored (``shard.multi``); a plain
    dense vector keeps float32 whatever it says. ``multivector``: Qdrant's
    ``multivector_config`` ({"comparator": "max_sim"}), which makes the vector a
    multivector: a matrix of rows per point, scored by MaxSim."""

    size: int
    distance: Distance
    hnsw_config: dict[str, Any] | None = None
    on_disk: bool | None = None
    datatype: str | None = None
    multivector: dict[str, Any] | None = None
    quantization: Quantization | None = None  # the vector's own, over the collection's

    @property
    def is_multi(self) -> bool:
        return self.multivector is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "distance": self.distance.value}
        if self.hnsw_config:
            out["hnsw_config"] = dict(self.hnsw_config)
        if self.on_disk is not None:
            out["on_disk"] = self.on_disk
        if self.datatype is not None:
            out["datatype"] = self.datatype
        if self.multivector is not None:
            out["multivector_config"] = dict(self.multivector)
        if self.quantization is not None:
            out["quantization_config"] = self.quantization.to_json()
        return out

    @staticmethod
    def from_json(data: dict[str, Any]) -> VectorParams:
        multivector = data.get("multivector_config")
        return VectorParams(
            size=int(data["size"]),
            distance=Distance(data["distance"]),
            hnsw_config=data.get("hnsw_config") or None,
            on_disk=data.get("on_disk"),
            datatype=data.get("datatype"),
            multivector=None if multivector is None else dict(multivector),
            quantization=Quantization.from_json(data.get("quantization_config")),
        )


@dataclass(frozen=True)
class SparseVectorParams:
    """One named sparse vector of a collection (Qdrant's SparseVectorParams):
    ``index`` (SparseIndexParams: full_scan_threshold, on_disk, datatype) is kept
    and reported, the index being exact whatever it says; ``modifier`` "idf"
    makes queries weigh each index by its inverse document frequency."""

    index: dict[str, Any] | None = None
    modifier: str | None = None

    @property
    def idf(self) -> bool:
        return self.modifier == "idf"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.index is not None:
            out["index"] = dict(self.index)
        if self.modifier is not None:
            out["modifier"] = self.modifier
        return out

    @staticmethod
    def from_json(data: dict[str, Any] | None) -> SparseVectorParams:
        data = data or {}
        index = data.get("index")
        return SparseVectorParams(
            index=None if index is None else {k: v for k, v in index.items() if v is not None},
            modifier=data.get("modifier"),
        )


@dataclass(frozen=True)
class ShardConfig:
    """What one shard needs to know about its collection. ``vectors``: the dense
    vectors of one row per point (each with its HNSW graph); ``multi``: the
    multivectors by name (Qdrant's dense vectors with a ``multivector_config``;
    no graph: searched exactly); ``sparse``: the sparse vectors by name. No name
    is in two of them."""

    vectors: dict[str, VectorParams]
    hnsw: HnswConfig = HnswConfig()
    optimizers: OptimizersConfig = OptimizersConfig()
    on_disk_payload: bool = True
    sparse: dict[str, SparseVectorParams] = field(default_factory=dict)
    multi: dict[str, VectorParams] = field(default_factory=dict)
    quantization: Quantization | None = None  # the collection's: a vector's own wins

    def vector(self, name: str) -> VectorParams:
        """The params of vector ``name``; BadInput naming it, as Qdrant does, if unknown."""
        try:
            return self.vectors[name]
        except KeyError:
            raise BadInput(f"Not existing vector name error: {name}") from None

    def sparse_vector(self, name: str) -> SparseVectorParams:
        """The params of sparse vector ``name``; BadInput naming it if unknown."""
        try:
            return self.sparse[name]
        except KeyError:
            raise BadInput(f"Not existing vector name error: {name}") from None

    def multi_vector(self, name: str) -> VectorParams:
        """The params of multivector ``name``; BadInput naming it if unknown."""
        try:
            return self.multi[name]
        except KeyError:
            raise BadInput(f"Not existing vector name error: {name}") from None

    def has_name(self, name: str) -> bool:
        """Whether ``name`` is a vector of the collection, dense, multi or sparse."""
        return name in self.vectors or name in self.sparse or name in self.multi

    def hnsw_for(self, name: str) -> HnswConfig:
        return self.hnsw.updated(self.vectors[name].hnsw_config)

    def quantization_for(self, name: str) -> Quantization | None:
        return self.vectors[name].quantization or self.quantization

    def vector_settings(self) -> dict[str, dict[str, Any]]:
        """What a PATCH may change of each dense vector while its shards run: its
        quantization in effect (Qdrant's JSON, None: none) and ``on_disk``. What a
        ``configure`` op carries and a snapshot keeps."""
        return {n: {"quantization": q.to_json() if (q := self.quantization_for(n)) is not None else None,
                    "on_disk": bool(p.on_disk)} for n, p in self.vectors.items()}

    def saved_settings(self) -> dict[str, dict[str, Any]]:
        """The part of ``vector_settings`` a shard's snapshot keeps, winning over the
        config the shard is opened with: the quantization, which the answers depend
        on. Where the rows live (``on_disk``) follows the config it is opened with."""
        return {n: {"quantization": v["quantization"]} for n, v in self.vector_settings().items()}

    def with_vector_settings(self, given: dict[str, dict[str, Any]]) -> ShardConfig:
        """A copy where each dense vector named in ``given`` has those settings
        (``vector_settings``' form), the others keep theirs; the collection's own
        quantization is folded into each vector's."""
        def settled(name: str, p: VectorParams) -> VectorParams:
            mine = given.get(name) or {}
            quantization = (Quantization.from_json(mine["quantization"]) if "quantization" in mine
                            else self.quantization_for(name))
            return dataclasses.replace(p, quantization=quantization, on_disk=bool(mine.get("on_disk", p.on_disk)))

        vectors = {n: settled(n, p) for n, p in self.vectors.items()}
        return dataclasses.replace(self, vectors=vectors, quantization=None)

    def to_json(self) -> dict[str, Any]:
        out = {
            "vectors": {n: p.to_json() for n, p in self.vectors.items()},
            "hnsw": self.hnsw.to_json(),
            "optimizers": self.optimizers.to_json(),
            "on_disk_payload": self.on_disk_payload,
        }
        if self.sparse:  # absent otherwise, so that configs without any read as before
            out["sparse"] = {n: p.to_json() for n, p in self.sparse.items()}
        if self.multi:  # likewise
            out["multi"] = {n: p.to_json() for n, p in self.multi.items()}
        if self.quantization is not None:  # likewise
            out["quantization"] = self.quantization.to_json()
        return out

    @staticmethod
    def from_json(data: dict[str, Any]) -> ShardConfig:
        return ShardConfig(
            vectors={n: VectorParams.from_json(p) for n, p in data["vectors"].items()},
            hnsw=HnswConfig(**data.get("hnsw", {})),
            optimizers=OptimizersConfig(**data.get("optimizers", {})),
            on_disk_payload=data.get("on_disk_payload", True),
            sparse={n: SparseVectorParams.from_json(p) for n, p in (data.get("sparse") or {}).items()},
            multi={n: VectorParams.from_json(p) for n, p in (data.get("multi") or {}).items()},
            quantization=Quantization.from_json(data.get("quantization")),
        )


# ---------------------------------------------------------------------------
# Reads.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadSelector:
    """Which payload keys to return. ``include``/``exclude`` are key paths
    (``a.b``); both None means the whole payload. A request that wants no payload
    carries ``None`` instead of a selector."""

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None


# ``True`` = every vector, ``False`` = none, a tuple = those names.
VectorSelector = Union[bool, tuple[str, ...]]


@dataclass(frozen=True)
class NearestQuery:
    """Plain nearest-neighbour search. The vector is float32 and, for Cosine,
    not yet normalised: the shard normalises (``shard.distances`` owns that). On
    a multivector it is a (rows, size) matrix, scored by MaxSim (``shard.multi``);
    so are the examples of the queries below."""

    vector: np.ndarray


@dataclass(frozen=True)
class RecommendQuery:
    """best_score or sum_scores recommendation over raw example vectors.
    (average_vector is a NearestQuery built by the gateway.)"""

    positive: tuple[np.ndarray, ...]
    negative: tuple[np.ndarray, ...]
    strategy: Literal["best_score", "sum_scores"]

    def __post_init__(self) -> None:
        if not self.positive and not self.negative:  # there would be nothing to score by
            raise BadInput("a recommend query needs at least one example")


@dataclass(frozen=True)
class ContextPair:
    positive: np.ndarray
    negative: np.ndarray


@dataclass(frozen=True)
class DiscoverQuery:
    target: np.ndarray
    context: tuple[ContextPair, ...]


@dataclass(frozen=True)
class ContextQuery:
    context: tuple[ContextPair, ...]

    def __post_init__(self) -> None:
        if not self.context:  # there would be nothing to score by
            raise BadInput("a context query needs at least one context pair")


@dataclass(frozen=True)
class SparseQuery:
    """Nearest search on a sparse vector: u32 ``indices`` and f32 ``values``
    (validated by ``shard.sparse.validate``). ``idf`` (a ``shard.sparse.Idf``) is
    the collection's statistics for a vector with the idf modifier, gathered by
    the gateway from every shard first, so that scores do not depend on the
    shard count; None otherwise."""

    indices: np.ndarray
    values: np.ndarray
    idf: Any = None


Query = Union[NearestQuery, RecommendQuery, DiscoverQuery, ContextQuery, SparseQuery]


@dataclass(frozen=True)
class SearchRequest:
    """One scored search on one shard.

    The shard returns its best ``offset + limit`` points (the gateway applies the
    offset once, after the merge). ``exclude_ids`` are points never to return:
    recommend and discover examples given by id, as in Qdrant.
    """

    query: Query
    using: str = DEFAULT_VECTOR
    filter: dict[str, Any] | None = None
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    with_payload: PayloadSelector | None = None
    with_vector: VectorSelector = False
    hnsw_ef: int | None = None
    exact: bool = False
    exclude_ids: frozenset[PointId] = frozenset()
    quantization: QuantizationParams | None = None


@dataclass
class ScoredPoint:
    """One result of a scored search, in the shape Qdrant's JSON gives it.
    ``vector`` is a float32 array for a collection's unnamed vector, a dict of
    arrays by name otherwise, or None when not asked for."""

    id: PointId
    version: int
    score: float
    payload: dict[str, Any] | None = None
    vector: np.ndarray | dict[str, np.ndarray] | None = None
    order_value: int | float | None = None



@dataclass
class Record:
    """A point as retrieve and scroll return it."""

    id: PointId
    payload: dict[str, Any] | None = None
    vector: np.ndarray | dict[str, np.ndarray] | None = None
    order_value: int | float | None = None



@dataclass(frozen=True)
class OrderBy:
    """Scroll ordering by a payload key (which must carry a range index)."""

    key: str
    direction: Literal["asc", "desc"] = "asc"
    start_from: int | float | None = None


@dataclass
class ShardInfo:
    """What a shard reports for GET /collections/{name}."""

    points_count: int
    vectors_count: int
    indexed_vectors_count: int
    pending_index: int  # points stored but not yet in their HNSW graph
    segments_count: int
    payload_schema: dict[str, dict[str, Any]] = field(default_factory=dict)
    wal_bytes: int = 0  # the write-ahead log's files on disk (for /metrics)


# ---------------------------------------------------------------------------
# Writes.
# ---------------------------------------------------------------------------
#
# An update operation is a dict with a "type" key. Point selection is either
# "ids": [PointId, ...] or "filter": {...}. Vectors travel as float32 numpy arrays.
#
#   {"type": "upsert", "ids": [...], "vectors": {name: (n, dim) array},
#    "vector_mask": {name: (n,) bool array}   # optional: rows that carry this vector
#    "sparse": {name: [[u32 indices, f32 values] | None, ...]}  # optional: one per row
#    "multi": {name: {"counts": (n,) int64, "rows": (sum counts, dim) float32}}
#             # optional: a multivector per row, its rows one after another; count 0: none given
#    "payloads": [dict | None, ...]}
#   {"type": "delete_points", "ids"|"filter": ...}
#   {"type": "update_vectors", "ids": [...], "vectors": {...}, "vector_mask": {...}, "sparse": {...}, "multi": {...}}
#   {"type": "delete_vectors", "ids"|"filter": ..., "names": [name, ...]}
#   {"type": "set_payload", "ids"|"filter": ..., "payload": {...}, "key": str | None}
#   {"type": "overwrite_payload", "ids"|"filter": ..., "payload": {...}}
#   {"type": "delete_payload", "ids"|"filter": ..., "keys": [key, ...]}
#   {"type": "clear_payload", "ids"|"filter": ...}
#   {"type": "create_index", "field": key, "schema": str | {...}}
#   {"type": "delete_index", "field": key}

Op = dict[str, Any]

OP_TYPES = frozenset(
    {
        "upsert",
        "delete_points",
        "update_vectors",
        "configure",
        "delete_vectors",
        "set_payload",
        "overwrite_payload",
        "delete_payload",
        "clear_payload",
        "create_index",
        "delete_index",
    }
)
