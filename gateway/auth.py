"""Who may call what: Qdrant's API keys and JWT access tokens.

Mirrors Qdrant 1.15 (src/common/auth/mod.rs ``AuthKeys::validate_request``,
src/common/auth/jwt_parser.rs, src/actix/auth.rs, lib/storage/src/rbac):

- the credential is the ``api-key`` header, else ``Authorization: Bearer <x>``;
- the read-write key (``service.api_key``) gives every right, the read-only key
  (``service.read_only_api_key``) reads only; both compared in constant time;
- with ``service.jwt_rbac`` any other credential is read as a JWT signed (HS256)
  with the read-write key, ``exp`` required (30 s of leeway), ``access`` either
  global ("r" | "m", "m" when absent) or a list of ``{collection, access: "r" | "rw"}``;
- the health checks need nothing (Qdrant's whitelist: exactly ``/`` and
  ``/healthz``, ``/readyz``, ``/livez`` and the web UI's ``/dashboard`` as
  prefixes); everything else does, ``/metrics`` and unknown paths included.

Failing to authenticate answers as Qdrant's middleware does: a plain-text body
(actix ``HttpResponse::Unauthorized().body(text)``), 401, or 403 for an expired
token or a bad signature. A credential that authenticates but lacks the right
answers 403 in Qdrant's JSON, "Forbidden: ..." (``StorageError::Forbidden``,
raised by the handler's access check in Qdrant; here by ``Forbidden`` below,
which the envelope renders).

What each route needs is decided in one place, ``NEEDS`` (method, route) ->
``Need``; a route missing from it needs global manage access, so a route added
later is closed until it is classified. ``decide`` is pure: (method, route,
collection, credential) -> an ``Access`` or a refusal, tested without a server.
Keys and tokens are never logged, and never part of an answer.
"""

from __future__ import annotations

import hmac
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from aiohttp import web

from gateway import errors
from gateway.serve import over_unix_socket

# How long the API key is, is the operator's choice (Qdrant takes any): PyJWT's
# warning about short HMAC keys would otherwise be logged for every token.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)

COLLECTION = "/collections/{collection_name}"
POINTS = COLLECTION + "/points"
SHARD_SNAPSHOTS = COLLECTION + "/shards/{shard_id}/snapshots"

# Qdrant's texts (src/common/auth/mod.rs, lib/storage/src/rbac/mod.rs).
NO_CREDENTIAL = "Must provide an API key or an Authorization bearer token"
BAD_CREDENTIAL = "Invalid API key or JWT"
GLOBAL_MANAGE = "Global manage access is required"
GLOBAL_ACCESS = "Global access is required"
COLLECTION_MANAGE = "Manage access for this operation is required"
JWT_LEEWAY_S = 30  # jwt_parser.rs: validation.leeway


def _collection_access(name: str) -> str:
    return f"Access to collection {name} is required"


def _collection_write(name: str) -> str:
    return f"Write access to collection {name} is required"


# --------------------------------------------------------------------- routes

READ, WRITE, MANAGE = "read", "write", "manage"


@dataclass(frozen=True)
class Need:
    """What a route needs. ``scope``: "open" (nothing), "any" (any valid
    credential; a listing then shows only the collections it may read),
    "collection" (the path's collection), "global" (every collection)."""

    scope: str
    level: str = READ


OPEN, ANY = Need("open"), Need("any")
C_READ, C_WRITE = Need("collection", READ), Need("collection", WRITE)
G_READ, G_MANAGE = Need("global", READ), Need("global", MANAGE)

_READ_POSTS = ("/search", "/search/batch", "/search/groups", "/recommend", "/recommend/batch", "/recommend/groups",
               "/discover", "/discover/batch", "/query", "/query/batch", "/query/groups", "/search/matrix/pairs",
               "/search/matrix/offsets", "", "/scroll", "/count")
_WRITES = [("PUT", POINTS), ("POST", POINTS + "/delete"), ("PUT", POINTS + "/vectors"),
           ("POST", POINTS + "/vectors/delete"), ("POST", POINTS + "/payload"), ("PUT", POINTS + "/payload"),
           ("POST", POINTS + "/payload/delete"), ("POST", POINTS + "/payload/clear"), ("POST", POINTS + "/batch"),
           # Payload indexes: write access to the collection (rbac ops_checks CreatePayloadIndex).
           ("PUT", COLLECTION + "/index"), ("DELETE", COLLECTION + "/index/{field_name}"),
           # Taking or deleting a snapshot: write access to the collection.
           ("POST", COLLECTION + "/snapshots"), ("DELETE", COLLECTION + "/snapshots/{snapshot_name}"),
           ("POST", SHARD_SNAPSHOTS), ("DELETE", SHARD_SNAPSHOTS + "/{snapshot_name}")]
_READS = [("GET", COLLECTION), ("GET", COLLECTION + "/exists"), ("GET", COLLECTION + "/aliases"),
          ("GET", POINTS + "/{id}"), ("POST", COLLECTION + "/facet"), ("GET", COLLECTION + "/cluster"),
          ("GET", COLLECTION + "/snapshots"), ("GET", COLLECTION + "/snapshots/{snapshot_name}"),
          ("GET", SHARD_SNAPSHOTS), ("GET", SHARD_SNAPSHOTS + "/{snapshot_name}")]
# Collection meta operations, recovery and cluster operations: global manage
# (rbac ops_checks check_collection_meta_operation; snapshot recovery).
_MANAGES = [("PUT", COLLECTION), ("PATCH", COLLECTION), ("DELETE", COLLECTION), ("POST", "/collections/aliases"),
            ("PUT", COLLECTION + "/snapshots/recover"), ("POST", COLLECTION + "/snapshots/upload"),
            ("PUT", SHARD_SNAPSHOTS + "/recover"), ("POST", SHARD_SNAPSHOTS + "/upload"),
            ("POST", COLLECTION + "/cluster")]

NEEDS: dict[tuple[str, str], Need] = {
    **{("POST", POINTS + suffix): C_READ for suffix in _READ_POSTS},
    **{route: C_READ for route in _READS},
    **{route: C_WRITE for route in _WRITES},
    **{route: G_MANAGE for route in _MANAGES},
    ("GET", "/collections"): ANY, ("GET", "/aliases"): ANY,
    ("GET", "/cluster"): G_READ, ("GET", "/metrics"): G_READ, ("GET", "/metrics/history"): G_READ,
    ("GET", COLLECTION + "/ingest/layout"): C_READ,
}
_OPEN_EXACT = ("/", "/healthz")
# Qdrant whitelists these as prefixes; the web UI's too (its pages hold no data:
# they call the API with the key the user gives them).
_OPEN_PREFIXES = ("/readyz", "/livez", "/dashboard")


def is_open(path: str) -> bool:
    return path in _OPEN_EXACT or path.startswith(_OPEN_PREFIXES)


def need(method: str, route: str | None, path: str) -> Need:
    """What (``method``, ``route``: the route's canonical form, None when no
    route matched) needs. HEAD is GET's."""
    if is_open(path):
        return OPEN
    if route is None:
        return ANY  # an unknown path: 401 without a credential, then 404, as Qdrant
    return NEEDS.get(("GET" if method == "HEAD" else method, route), G_MANAGE)


# --------------------------------------------------------------------- access


@dataclass(frozen=True)
class Access:
    """What a credential allows: ``mode`` "m" or "r" for every collection, or
    ``collections`` {name: "r" | "rw"} (Qdrant's ``Access::Global`` / ``Collection``)."""

    mode: str | None = None
    collections: dict[str, str] = field(default_factory=dict)

    def readable(self, name: str) -> bool:
        return self.mode is not None or name in self.collections


FULL, READ_ONLY = Access("m"), Access("r")


class Unauthenticated(Exception):
    """No usable credential: ``status`` 401 (or 403 for a token expired or
    badly signed), plain-text ``text`` as Qdrant's middleware answers."""

    def __init__(self, text: str, status: int = 401):
        super().__init__(text)
        self.text, self.status = text, status


class Forbidden(errors.QdrantError):
    """Authenticated, not allowed: 403 "Forbidden: ..." in Qdrant's JSON."""

    status = 403

    def __init__(self, description: str):
        super().__init__("Forbidden: " + description, 403)


class Keys:
    """The configured keys; ``authenticate`` turns a request's headers into an Access."""

    def __init__(self, api_key: str | None, read_only_api_key: str | None, jwt_rbac: bool):
        # Qdrant treats an empty key as unset (AuthKeys::try_create).
        self._write = (api_key or "").encode() or None
        self._read = (read_only_api_key or "").encode() or None
        self._jwt_key = api_key if jwt_rbac and api_key else None

    @classmethod
    def from_settings(cls, service) -> Keys | None:
        """None when no key is set: then nothing is checked (Qdrant's default)."""
        secret = lambda s: s.get_secret_value() if s is not None else None  # noqa: E731
        keys = cls(secret(service.api_key), secret(service.read_only_api_key), service.jwt_rbac)
        return keys if keys._write or keys._read else None

    @staticmethod
    def credential(headers) -> str | None:
        """``api-key``, else ``Authorization: Bearer <x>`` (mod.rs extract_key)."""
        key = headers.get("api-key")
        if key is not None:
            return key
        auth = headers.get("Authorization")
        return auth[len("Bearer "):] if auth is not None and auth.startswith("Bearer ") else None

    def authenticate(self, credential: str | None) -> Access:
        if credential is None:
            raise Unauthenticated(NO_CREDENTIAL)
        given = credential.encode()
        # Both compared, always: how long this takes says nothing about which key matched.
        write = self._write is not None and hmac.compare_digest(self._write, given)
        read = self._read is not None and hmac.compare_digest(self._read, given)
        if write:
            return FULL
        if read:
            return READ_ONLY
        if self._jwt_key is not None:
            return self._decode(credential)
        raise Unauthenticated(BAD_CREDENTIAL)

    def _decode(self, token: str) -> Access:
        """Qdrant's JwtParser: HS256 only, ``exp`` required with 30 s of leeway,
        no audience; an expired token or a bad signature answers 403 with
        jsonwebtoken's words, anything else that is not a valid token 401."""
        try:
            claims = jwt.decode(token, self._jwt_key, algorithms=["HS256"], leeway=JWT_LEEWAY_S,
                                options={"require": ["exp"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("ExpiredSignature", 403) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("InvalidSignature", 403) from None
        except jwt.PyJWTError:
            raise Unauthenticated(BAD_CREDENTIAL) from None
        return claims_access(claims)


def claims_access(claims: Any) -> Access:
    """The Access of a token's claims (rbac ``Access``: untagged, "r" | "m" or a
    list); claims that do not read as Qdrant's answer 401."""
    if not isinstance(claims, dict):
        raise Unauthenticated(BAD_CREDENTIAL)
    if claims.get("value_exists") is not None:
        # Qdrant checks it against a collection's points at every request; Shoal refuses such tokens.
        raise Unauthenticated("JWT claim value_exists is not supported by Shoal")
    access = claims.get("access", "m")
    if access in ("r", "m"):
        return Access(access)
    if not isinstance(access, list):
        raise Unauthenticated(BAD_CREDENTIAL)
    collections: dict[str, str] = {}
    for item in access:
        if not (isinstance(item, dict) and isinstance(item.get("collection"), str) and item.get("access") in ("r", "rw")):
            raise Unauthenticated(BAD_CREDENTIAL)
        if item.get("payload") is not None:
            raise Unauthenticated("JWT payload constraints are not supported by Shoal")
        if item["collection"] in collections:
            raise Unauthenticated("access: Collection name should be unique")  # rbac validate_unique_collections
        collections[item["collection"]] = item["access"]
    return Access(None, collections)


def check(access: Access, needed: Need, collection: str | None) -> None:
    """Raise Forbidden unless ``access`` meets ``needed`` (rbac ``check_global_access``,
    ``check_collection_access``)."""
    if needed.scope in ("open", "any"):
        return
    if access.mode is not None:
        if needed.level != READ and access.mode != "m":
            raise Forbidden(GLOBAL_MANAGE)
        return
    if needed.scope == "global" or collection is None:
        raise Forbidden(GLOBAL_ACCESS)
    granted = access.collections.get(collection)
    if granted is None:
        raise Forbidden(_collection_access(collection))
    if needed.level == WRITE and granted != "rw":
        raise Forbidden(_collection_write(collection))
    if needed.level == MANAGE:
        raise Forbidden(COLLECTION_MANAGE)


def decide(keys: Keys, method: str, route: str | None, path: str, collection: str | None,
           credential: str | None) -> Access | None:
    """The whole rule: None for an open route, else the caller's Access;
    Unauthenticated or Forbidden when the request must be refused."""
    needed = need(method, route, path)
    if needed is OPEN:
        return None
    access = keys.authenticate(credential)
    check(access, needed, collection)
    return access


def visible(result: Any, route: str, access: Access) -> Any:
    """A listing narrowed to what a collection-scoped token may read: GET
    /collections shows those collections, GET /aliases the aliases of them
    (Qdrant's list_collections / list_aliases with an Access)."""
    if access.mode is not None or not isinstance(result, dict):
        return result
    if route == "/collections":
        return {**result, "collections": [c for c in result["collections"] if access.readable(c["name"])]}
    if route == "/aliases":
        return {**result, "aliases": [a for a in result["aliases"] if access.readable(a["collection_name"])]}
    return result


# ----------------------------------------------------------------- middleware


INTERNAL_PREFIX = "/_shoal/"  # routes between Shoal's own HTTP processes (gateway.workers, gateway.scrape)


def middleware(keys: Keys):
    """The aiohttp middleware enforcing ``keys``. It runs first, before the
    envelope's readiness and health gates, so that a caller without a key learns
    nothing but 401; it renders its refusals itself (Forbidden in Qdrant's JSON)
    and narrows the two listings. Shoal's internal routes (under INTERNAL_PREFIX)
    need no key over a Unix socket, which only this user's processes reach;
    over TCP they are checked as any other path (and their handlers refuse them)."""

    @web.middleware
    async def authorize(request: web.Request, handler):
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        if request.path.startswith(INTERNAL_PREFIX) and over_unix_socket(request):
            return await handler(request)
        started = time.perf_counter()
        try:
            access = decide(keys, request.method, route, request.path, request.match_info.get("collection_name"),
                            Keys.credential(request.headers))
        except Unauthenticated as exc:
            return web.Response(status=exc.status, text=exc.text)
        except Forbidden as exc:
            status, body = errors.error_response(exc, started)
            return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
        response = await handler(request)
        if access is not None and access.mode is None and route in ("/collections", "/aliases") \
                and response.status == 200 and isinstance(response, web.Response) and response.body is not None:
            # Rare (a collection-scoped token listing): read the envelope back and narrow it.
            envelope = orjson.loads(response.body)
            envelope["result"] = visible(envelope["result"], route, access)
            response = web.Response(body=orjson.dumps(envelope), status=200, content_type="application/json")
        return response

    return authorize
