"""Errors answered exactly as Qdrant 1.15's REST API answers them.

Qdrant's envelope is ``{"status": {"error": TEXT}, "time": SECONDS}`` (``result``
is skipped when empty; errors of the body extractor always say ``"time": 0.0``).
Status codes and text prefixes follow Qdrant:

- body does not deserialize   400 "Format error in JSON body: <serde message>"
  (src/actix/mod.rs validation_error_handler)
- body breaks a validate rule 422 "Validation error in JSON body: [path: msg; ...]"
  (lib/collection operations/validation.rs label_errors)
- body over the size limit    400 "Payload error: JSON payload (N bytes) is larger
  than allowed (limit: M bytes)." -- Qdrant's handler answers every non-validation
  extractor error with 400, so actix's 413 never reaches the client
- engine BadInput             400 "Wrong input: <text>"  (StorageError::BadInput)
- engine NotFound             404 "Not found: <text>"    (StorageError::NotFound)
- engine Conflict             409 "Wrong input: <text>"  (StorageError::AlreadyExists)
- Qdrant BadRequest           400 "Bad request: <text>"  (StorageError::BadRequest)
- shard unreachable / silent  503 "Shard temporarily unavailable: <text>"
  (StorageError::ShardUnavailable); also every request while Ray is down
- shard call over its bound   408 "Timeout: Timeout error: Operation 'Search'
  timed out after N seconds" (CollectionError::timeout as StorageError::Timeout)
- anything else               500 "Service internal error: <text>"
- unknown route, wrong method 404 with an EMPTY body: actix puts the method guard
  on each resource, so a wrong method falls through to the default 404 service.

Prefix rule for engine texts: the engine may raise with or without Qdrant's
prefix. A text that already starts with a Qdrant prefix (``Wrong input:``,
``Not found:``, ``Bad request:``, ...) is sent as is; any other text gets its
class's prefix. So ``BadInput("Wrong input: Vector dimension error: ...")`` and
``BadInput("Vector dimension error: ...")`` answer the same.

The texts of the errors Shoal raises itself live here as functions, so the
whole code base words each one the same way (sources named per function).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cluster.shard_client import ShardTimeout, ShardUnavailable
from shard.types import BadInput, Conflict, NotFound, ShoalError

# ---------------------------------------------------------------------------
# Exceptions of the REST layer.
# ---------------------------------------------------------------------------

FORMAT_PREFIX = "Format error in JSON body: "
VALIDATION_PREFIX = "Validation error in JSON body: "
WRONG_INPUT = "Wrong input: "
NOT_FOUND = "Not found: "
BAD_REQUEST = "Bad request: "
SERVICE_ERROR = "Service internal error: "
RATE_LIMITED = "Rate limiting exceeded: "

KNOWN_PREFIXES = (
    WRONG_INPUT,
    NOT_FOUND,
    BAD_REQUEST,
    FORMAT_PREFIX,
    VALIDATION_PREFIX,
    SERVICE_ERROR,
    "Deserialize error in ",
    "Validation error in ",
    "Payload error: ",
    "Forbidden: ",
    "Timeout: ",
    "Storage locked: ",
    "Rate limiting exceeded: ",
    "Shard temporarily unavailable: ",
    "Pre-condition failure: ",
    "Checksum mismatch: ",
)


class QdrantError(Exception):
    """An error whose status and full text are already Qdrant's."""

    status = 400
    # Errors of the body extractor: Qdrant's handler writes ``"time": 0.0``.
    body_level = False
    # Extra response headers (a rate limit's Retry-After).
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self, text: str, status: int | None = None):
        super().__init__(text)
        self.text = text
        if status is not None:
            self.status = status


class FormatError(QdrantError):
    """The body does not deserialize: 400 "Format error in JSON body: ..."."""

    status = 400
    body_level = True

    def __init__(self, message: str):
        super().__init__(FORMAT_PREFIX + message)
        self.message = message


class ValidationError(QdrantError):
    """A request breaks a validate rule: 422 with every (path, message) pair.
    ``where`` is what broke it, in Qdrant's words: "JSON body", "path
    parameters" or "query parameters" (src/actix/mod.rs validation_error_handler)."""

    status = 422
    body_level = True

    def __init__(self, errors: list[tuple[str, str]], where: str = "JSON body"):
        super().__init__(validation_text(errors, where))
        self.errors = list(errors)


class QueryDeserializeError(QdrantError):
    """A query parameter does not deserialize: 400 "Deserialize error in query
    parameters: <serde_urlencoded's message>"."""

    status = 400
    body_level = True

    def __init__(self, message: str):
        super().__init__("Deserialize error in query parameters: " + message)


class BodyTimeout(QdrantError):
    """The request body did not arrive in time: 408, and the connection is closed."""

    status = 408

    def __init__(self, seconds: float):
        super().__init__(f"Timeout: the request body did not arrive within {seconds:g} s", 408)


class BadRequest(QdrantError):
    """Qdrant's StorageError::BadRequest: 400 "Bad request: ..."."""

    def __init__(self, description: str):
        super().__init__(BAD_REQUEST + description, 400)


class PayloadTooLarge(QdrantError):
    """The body is over ``max_request_size_mb``."""

    body_level = True

    def __init__(self, length: int | None, limit: int):
        super().__init__(payload_too_large(length, limit), 400)


class RouteNotFound(QdrantError):
    """No route for this path and method: 404, empty body."""

    def __init__(self):
        super().__init__("", 404)


class RateLimited(QdrantError):
    """Strict mode's read or write rate limit: 429 "Rate limiting exceeded: ..."
    (StorageError::RateLimitExceeded), with a ``Retry-After`` header in whole
    seconds when waiting helps (src/actix/helpers.rs process_response_error)."""

    status = 429

    def __init__(self, description: str, retry_after_s: int | None = None):
        super().__init__(RATE_LIMITED + description, 429)
        self.headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}


def validation_text(errors: list[tuple[str, str]], where: str = "JSON body") -> str:
    """Qdrant's label_errors: "Validation error in JSON body: [a: x; b: y]"."""
    return f"Validation error in {where}: [" + "; ".join(f"{path}: {msg}" for path, msg in errors) + "]"


# ---------------------------------------------------------------------------
# Texts (one place for each).
# ---------------------------------------------------------------------------


def payload_too_large(length: int | None, limit: int) -> str:
    """actix JsonPayloadError via actix-web-validator ("Payload error: ")."""
    if length is None:
        return f"Payload error: JSON payload has exceeded limit ({limit} bytes)."
    return f"Payload error: JSON payload ({length} bytes) is larger than allowed (limit: {limit} bytes)."


def collection_not_found(name: str) -> str:
    """404 -- storage collections_ops.rs validate_collection_exists."""
    return f"Collection `{name}` doesn't exist!"


def collection_already_exists(name: str) -> str:
    """409 (AlreadyExists) -- validate_collection_not_exists; also when an alias
    would take a collection's name."""
    return f"Collection `{name}` already exists!"


def alias_not_found(alias: str) -> str:
    """404 -- alias_mapping.rs rename_alias of a missing alias (sic: "exists")."""
    return f"Alias {alias} does not exists!"


def vector_dimension(expected: int, got: int) -> str:
    """400 BadInput -- segment OperationError::WrongVectorDimension."""
    return f"Vector dimension error: expected dim: {expected}, got {got}"


def non_finite_number(expression: str) -> str:
    """400 -- OperationError::NonFiniteNumber (a formula's value)."""
    return f"The expression {expression} produced a non-finite number"


def formula_variable_type(key: Any, expected: str, description: str) -> str:
    """400 -- OperationError::VariableTypeError (a formula's payload variable)."""
    return f"Expected {expected} value for {key} in the payload and/or in the formula defaults. Error: {description}"


def vector_name_not_exists(name: str) -> str:
    """400 BadInput -- segment OperationError::VectorNameNotExists."""
    return f"Not existing vector name error: {name}"


def point_not_found(point_id: Any) -> str:
    """404 -- CollectionError::PointNotFound ("No point with id 7 found")."""
    return f"No point with id {point_id} found"


def point_does_not_exist(point_id: Any) -> str:
    """404 -- GET /collections/{name}/points/{id} of a missing point."""
    return f"Point with id {point_id} does not exists!"


def point_id_not_recognized(raw: str) -> str:
    """400 BadInput -- GET /collections/{name}/points/{id} with an id that is
    neither a u64 nor a UUID."""
    return f'Can not recognize "{raw}" as point id'


def no_positive_for_average_vector() -> str:
    """400 BadRequest -- /points/recommend, strategy average_vector, no positive
    (recommendations.rs)."""
    return "At least one positive vector ID required with this strategy"


def no_examples_for_strategy() -> str:
    """400 BadRequest -- /points/recommend, best_score/sum_scores, no examples."""
    return "At least one positive or negative vector ID required with this strategy"


def empty_positive_average() -> str:
    """400 BadInput -- query API recommend, average_vector, no positive vector
    (avg_vectors of an empty set)."""
    return "Positive vectors should not be empty with `average` strategy"


def missing_order_by_index(key: str) -> str:
    """400 BadInput -- OperationError::MissingRangeIndexForOrderBy."""
    return (
        f"No range index for `order_by` key: `{key}`. Please create one to use `order_by`. "
        "Check https://qdrant.tech/documentation/concepts/indexing/#payload-index to see which "
        "payload schemas support Range conditions"
    )


def missing_facet_index(key: str) -> str:
    """400 BadInput -- OperationError::MissingMapIndexForFacet."""
    return (
        f"No appropriate index for faceting: `{key}`. Please create one to facet on this field. "
        "Check https://qdrant.tech/documentation/concepts/indexing/#payload-index to see which "
        "payload schemas support Match conditions"
    )


def lookup_collection_not_found(name: str) -> str:
    """404 -- lookup_from naming a missing collection: CollectionError::NotFound
    {what: "Collection x"} displays "{what} not found"."""
    return f"Collection {name} not found"


def dense_sparse_name_clash(name: str) -> str:
    """400 BadInput -- CreateCollectionOperation::new."""
    return f"Dense and sparse vector names must be unique - duplicate found with '{name}'"


def wrong_sparse() -> str:
    """400 BadInput -- a sparse vector given for a dense name or the other way
    round: OperationError::WrongSparse as CollectionError displays it."""
    return "Conversion between sparse and regular vectors failed"


def wrong_multi() -> str:
    """400 BadInput -- a plain dense vector stored under a multivector's name or a
    multivector under a plain one's (or queried against it): OperationError::WrongMulti
    as CollectionError displays it."""
    return "Conversion between multi and regular vectors failed"


# -- create with init_from: 400 BadInput, the source's vectors ("origin") against the
# new collection's ("other"): collection operations/types.rs VectorsConfig::check_compatible.


def init_from_vectors_kind(origin: list[str], other: list[str]) -> str:
    """One side has the unnamed vector (listed as no name), the other named ones
    (incompatible_vectors_error)."""
    return (f"Vectors configuration is not compatible: origin collection have vectors [{', '.join(origin)}], "
            f"while other vectors [{', '.join(other)}]")


def init_from_vector_missing(name: str) -> str:
    """A vector of the source the new collection lacks (missing_vector_error)."""
    return f"Vectors configuration is not compatible: origin collection have vector {name}, while other collection does not"


def init_from_vector_param(name: str, what: str, origin: object, other: object) -> str:
    """``what`` is "size" or "distance" (VectorParamsBase::check_compatibility); the
    unnamed vector's name is empty, so Qdrant's text then holds two spaces."""
    return (f"Vectors configuration is not compatible: origin vector {name} {what}: {origin}, "
            f"while other vector {what}: {other}")


def init_from_custom_sharding() -> str:
    """storage toc/create_collection.rs, after the vectors are checked."""
    return "Can't initialize collection from another collection with custom sharding method"


def no_target_or_context() -> str:
    """400 BadRequest -- discover with neither a target nor a context pair
    (collection/src/discovery.rs); Shoal says the same for an empty context query."""
    return "target and/or context_pairs must be specified"


def no_inference() -> str:
    """400 -- a document, image or object to embed. Qdrant answers 500 "InferenceService
    is not initialized" without an inference service; Shoal has none at all, and
    says so as the client's error it is."""
    return "documents, images and objects need an inference service, which Shoal does not have: send vectors"


def score_threshold_with_order_by() -> str:
    """400 BadRequest -- query API with order_by and score_threshold."""
    return "Can't use score_threshold with an order_by query."


# -- strict mode: 400 BadRequest (CollectionError::StrictMode became StorageError::
# BadRequest in Qdrant 1.14.1, qdrant#6560; before that it was 403 Forbidden).
# collection operations/verification/mod.rs words them as "{error}. Help: {solution}"
# (CollectionError::strict_mode); the size limits are plain bad_request texts.


def _strict(error: str, solution: str) -> str:
    return f"{error}. Help: {solution}"


def strict_limit_exceeded(value: object, limit: object, name: str) -> str:
    """check_limit_opt: a request's ``limit`` (or ``timeout``, ``hnsw_ef``,
    ``oversampling``, "upsert limit", "update limit") over the configured maximum."""
    return _strict(f'Limit exceeded {value} > {limit} for "{name}"',
                   f'Reduce the "{name}" parameter to or below {limit}.')


def strict_disabled(name: str, parameter: str) -> str:
    """check_bool_opt: "Exact search disabled!" (sic: Qdrant then adds ". Help:")."""
    return _strict(f"{name} disabled!", f"Set {parameter}=false.")


def strict_unindexed(key: str, schemas: list[str], what: str = "filter") -> str:
    """A filter (or formula, ``what="formula expression"``) on a key without a
    payload index able to serve it; ``schemas`` are the index types that would."""
    return _strict(f'Index required but not found for "{key}" of one of the following types: [{", ".join(schemas)}]',
                   f"Create an index for this key or use a different {what}.")


def strict_group_by_unindexed(key: str) -> str:
    """check_grouping_field: group_by on a key without a payload index."""
    return _strict(f'Index required but not found for "{key}"', "Create an index supporting `match` for this key.")


def strict_group_by_kind(kind: str, key: str) -> str:
    """check_grouping_field: group_by on a key whose index cannot match values
    (``kind`` is Rust's Debug of the schema type: "Float", "Text", ...)."""
    return _strict(f'Index of type "{kind}" found for "{key}"', "Create an index supporting `match` for this key.")


def strict_full_scan(using: str, payload_m_too: bool) -> str:
    """query.rs check_fullscan: a vector query with ``search_allow_exact: false`` on a
    vector without an HNSW graph (``m`` = 0) and no tenant filter (or ``payload_m``
    also 0). The default vector is not named."""
    where = "" if using == "" else f" on '{using}'"
    if payload_m_too:
        return _strict(f"Request is forbidden{where} because vector indexing is disabled (hnsw_config.m = 0 and "
                       "hnsw_config.payload_m = 0)", "Enable vector indexing, use a prefetch query with indexed "
                       "vectors or enable strict mode `search_allow_exact` option")
    return _strict(f"Request is forbidden{where} because global vector indexing is disabled (hnsw_config.m = 0)",
                   "Use tenant-specific filter, enable global vector indexing or enable strict mode "
                   "`search_allow_exact` option")


def strict_filter_conditions(count: int, limit: int) -> str:
    return _strict(f"Filter condition limit reached ({count} > {limit})",
                   "Reduce the amount of conditions of your filter.")


def strict_condition_size(size: int, limit: int) -> str:
    return _strict(f"Condition size limit reached ({size} > {limit})", "Reduce the size of your condition.")


def strict_payload_index_count(limit: int) -> str:
    """CreateFieldIndex's check: the collection has ``limit`` payload indexes already."""
    return _strict(f"Collection already has the maximum number of payload indices ({limit})",
                   "Please delete an existing index before creating a new one.")


def strict_points_count(limit: int) -> str:
    """update.rs check_collection_points_count_limit (CollectionError::bad_request)."""
    return f"Max points count limit of {limit} reached!"


def strict_vector_storage(megabytes: str) -> str:
    """check_collection_vector_size_limit; ``megabytes`` is the limit in MiB as Rust
    displays an f32 (240 bytes: "0.00022888184")."""
    return f"Max vector storage size limit of {megabytes}MB reached!"


def strict_payload_storage(megabytes: str) -> str:
    """check_collection_payload_size_limit, the limit displayed as in ``strict_vector_storage``."""
    return f"Max payload storage size limit of {megabytes}MB reached!"


def strict_sparse_length(name: str, limit: int, given: int) -> str:
    return f"Sparse vector '{name}' has a limit of {limit} indices, but {given} were provided!"


def strict_multivector_length(name: str, limit: int, given: int) -> str:
    return f"Multivector '{name}' has a limit of {limit} vectors, but {given} were provided!"


def rate_limit_over_capacity(kind: str) -> str:
    """RateLimitError::AlwaysOverBudget (``kind``: "Read" or "Write"): no Retry-After."""
    return f"{kind} rate limit exceeded, request larger than rate limiter capacity, please try to split your request"


def rate_limit_retry(kind: str, cost: int, available: float, retry_after_s: int) -> str:
    """RateLimitError::Retry, with the tokens left shown with one decimal."""
    return (f"{kind} rate limit exceeded: Operation requires {cost} tokens but only {available:.1f} were "
            f"available. Retry after {retry_after_s}s")


def shard_not_found(shard_id: int) -> str:
    """404 -- a shard id the collection does not have: shard_not_found_error's
    CollectionError::NotFound {what: "shard 7"} displays "{what} not found"."""
    return f"shard {shard_id} not found"


def checksum_mismatch(file_checksum: str, given: str) -> str:
    """400 -- an upload whose ``checksum`` is not its SHA-256: StorageError::
    ChecksumMismatch, which the upload routes build with the file's checksum as
    "expected" and the one given as "actual"."""
    return f"Checksum mismatch: expected {file_checksum}, actual {given}"


# -- POST /collections/{name}/cluster (src/common/collections.rs
# do_update_collection_cluster, and what consensus answers when it applies the op).


def shard_not_in_collection(shard_id: int, collection: str) -> str:
    """400 BadRequest -- move/replicate a shard, drop a replica, of a shard id the
    collection does not have."""
    return f"Shard {shard_id} of {collection} does not exist"


def peer_not_found(peer: int) -> str:
    """400 BadRequest -- a peer id that is not a member of the cluster."""
    return f"Peer {peer} does not exist"


def shard_not_active_on_peer(shard_id: int, peer: int) -> str:
    """400 BadRequest -- a transfer's source holds no active replica of the shard
    (shards/transfer/helpers.rs validate_transfer)."""
    return f"Shard {shard_id} is not active on peer {peer}"


def transfer_not_found(from_peer: int, to_peer: int, collection: str, shard_id: int) -> str:
    """404 NotFound -- abort_transfer / restart_transfer of no running transfer."""
    return f"Shard transfer {from_peer} -> {to_peer} for collection {collection}:{shard_id} does not exist"


def no_replica_on_peer(peer: int, shard_id: int) -> str:
    """400 BadRequest -- drop_replica on a peer without one (collection/mod.rs
    handle_replica_changes)."""
    return f"Peer {peer} has no replica of shard {shard_id}"


def last_active_replica(shard_id: int, peer: int) -> str:
    """400 BadRequest -- drop_replica of a shard's last (active) replica."""
    return f"Shard {shard_id} must have at least one active replica after removing {peer}"


def shard_key_with_auto_sharding() -> str:
    """400 BadRequest -- create_sharding_key / drop_sharding_key on a collection
    sharded automatically (Qdrant says "created" for a drop too)."""
    return "Shard Key cannot be created with Auto sharding method"


def resharding_unavailable() -> str:
    """400 BadRequest -- start_resharding: Qdrant's open-source build refuses it so."""
    return "resharding is only supported in Qdrant Cloud"


def resharding_not_in_progress(collection: str) -> str:
    """400 BadRequest -- abort_resharding (and the internal resharding steps)."""
    return f"resharding is not in progress for collection {collection}"


def transfer_to_itself(from_peer: int) -> str:
    """422 -- a transfer whose two peers are one (lib/common validation.rs
    validate_shard_different_peers), reported at ``<op>.to_peer_id``."""
    return f'cannot transfer shard to itself, "to_peer_id" must be different than {from_peer} in "from_peer_id"'


def already_in_transfer(shard_id: int, from_peer: int, to_peer: int) -> str:
    """400 BadRequest -- a transfer of a shard already moving to or from either peer
    (consensus validate_transfer)."""
    return f"Shard {shard_id} is already involved in transfer {from_peer} -> {to_peer}"


def peer_holds_no_shards(peer: int) -> str:
    """400 BadRequest -- Shoal's own: a transfer's target must be a Ray node that hosts
    replicas (a gateway's peer votes in the Raft but holds none)."""
    return f"Peer {peer} holds no shard replicas: a transfer's target must be a Ray node with CPUs"


def replica_already_on_peer(shard_id: int, peer: int) -> str:
    """400 BadRequest -- Shoal's own: one replica of a shard per node (a dead one there
    is caught up or replaced by the cluster itself)."""
    return f"Shard {shard_id} already has a replica on peer {peer}"


def replica_changes_not_supported() -> str:
    """400 BadRequest -- a cluster operation Qdrant would start, which Shoal does not
    carry out: replica changes on a collection that is not replicated, and
    restart_transfer (Shoal's controller retries a failed transfer by itself)."""
    return ("Shoal moves, copies and drops the replicas of replicated collections only (a cluster of several Ray "
            "nodes), and retries transfers by itself: this operation cannot be carried out")


SHARD_UNAVAILABLE = "Shard temporarily unavailable: "
TIMEOUT = "Timeout: "
# Qdrant's names of the operations that time out (CollectionError::timeout callers).
_OPERATIONS = {"search_batch": "Search", "scroll": "Query scroll", "facet": "facet", "sample": "sampling"}


def shard_timeout(operation: str, seconds: float) -> str:
    """408 Timeout -- CollectionError::timeout(secs, "Search") shown as
    StorageError::Timeout: "Timeout error: Operation 'Search' timed out after 5 seconds"."""
    return f"Timeout error: Operation '{_OPERATIONS.get(operation, operation)}' timed out after {seconds:g} seconds"


# ---------------------------------------------------------------------------
# Envelopes.
# ---------------------------------------------------------------------------


def _elapsed(started: float | None) -> float:
    return 0.0 if started is None else max(0.0, time.perf_counter() - started)


def ok_envelope(result: Any, started: float | None = None) -> dict[str, Any]:
    """Qdrant's success body. ``started`` is a ``time.perf_counter()`` reading."""
    return {"result": result, "status": "ok", "time": _elapsed(started)}


def error_envelope(text: str, started: float | None = None) -> dict[str, Any]:
    return {"status": {"error": text}, "time": _elapsed(started)}


def _prefixed(text: str, prefix: str) -> str:
    return text if text.startswith(KNOWN_PREFIXES) else prefix + text


def _cause(exc: BaseException) -> BaseException:
    """An engine error wrapped by a remote call (a Ray task error keeps the
    original as ``cause``)."""
    seen = 0
    while not isinstance(exc, (ShoalError, QdrantError)) and seen < 5:
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
        seen += 1
    return exc


def status_and_text(exc: BaseException) -> tuple[int, str]:
    """Qdrant's status code and error text for an exception."""
    exc = _cause(exc)
    if isinstance(exc, QdrantError):
        return exc.status, exc.text
    if isinstance(exc, ShardUnavailable):
        return 503, _prefixed(str(exc), SHARD_UNAVAILABLE)
    if isinstance(exc, ShardTimeout):
        return 408, TIMEOUT + shard_timeout(exc.operation, exc.seconds)
    if isinstance(exc, NotFound):
        return 404, _prefixed(str(exc), NOT_FOUND)
    if isinstance(exc, Conflict):
        return 409, _prefixed(str(exc), WRONG_INPUT)
    if isinstance(exc, (BadInput, ShoalError)):
        return 400, _prefixed(str(exc), WRONG_INPUT)
    return 500, SERVICE_ERROR + _summary(exc)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _summary(exc: BaseException) -> str:
    """An internal fault's text for a client: its first line, without terminal
    colours, at most 300 characters. The traceback goes to the log, not to the
    client (a Ray error's text holds the remote traceback and file paths)."""
    text = _ANSI.sub("", str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."


def error_response(exc: BaseException, started: float | None = None) -> tuple[int, dict[str, Any] | None]:
    """(status, body) for any exception. The body is None when Qdrant sends an
    empty body (unknown route): send no JSON then."""
    status, text = status_and_text(exc)
    if isinstance(exc, RouteNotFound):
        return status, None
    if getattr(_cause(exc), "body_level", False):
        started = None
    return status, error_envelope(text, started)


_TOO_LARGE = re.compile(r"body size (\d+) exceeded(?:, actual body size (\d+))?")


def http_error(
    exc: BaseException, started: float | None = None, content_length: int | None = None
) -> tuple[int, dict[str, Any] | None]:
    """(status, body) for an HTTP-level exception of the web framework, read by
    duck typing (``status``/``status_code``, and for a body too large the limit
    from ``max_size`` or the text "Maximum request body size N exceeded"):

    - 404 / 405 -> 404, empty body (None), as actix answers;
    - 413       -> 400 "Payload error: JSON payload (N bytes) is larger than
                   allowed (limit: M bytes)." as Qdrant answers (N is the
                   request's Content-Length; pass ``content_length``, else the
                   length-less form "JSON payload has exceeded limit (M bytes).");
    - other     -> the same status with its reason as the error text.
    """
    status = getattr(exc, "status", None) or getattr(exc, "status_code", 500)
    if status in (404, 405):
        return 404, None
    if status == 413:
        limit = getattr(exc, "max_size", None)
        found = _TOO_LARGE.search(str(getattr(exc, "text", "") or exc))
        if limit is None and found:
            limit = int(found.group(1))
        return 400, error_envelope(payload_too_large(content_length, limit or 0))
    reason = getattr(exc, "text", None) or getattr(exc, "reason", None) or str(exc)
    return int(status), error_envelope(str(reason), started)
