"""gateway.auth without a server: which routes need what, what each credential
allows, and Qdrant's answers when it does not (status and text)."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway import auth, settings as settings_module
from gateway.app import create_app
from gateway.settings import Settings

KEY, RO_KEY = "write-key-0123456789", "read-key-0123456789"
KEYS = auth.Keys(KEY, RO_KEY, jwt_rbac=True)
C = "/collections/{collection_name}"


async def _no_lifecycle(app):
    yield


def routes() -> list[tuple[str, str]]:
    app = create_app(Settings(), _no_lifecycle)
    return [(r.method, r.resource.canonical) for r in app.router.routes()]


def token(claims: dict, key: str = KEY, algorithm: str = "HS256") -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, key, algorithm=algorithm)


def decide(credential, method="GET", route=C, collection="books", keys=KEYS):
    path = route.replace("{collection_name}", collection or "")
    return auth.decide(keys, method, route, path, collection, credential)


def refusal(credential, **kwargs) -> tuple[int, str]:
    try:
        decide(credential, **kwargs)
    except auth.Unauthenticated as exc:
        return exc.status, exc.text
    except auth.Forbidden as exc:
        return exc.status, exc.text
    raise AssertionError("allowed")


def test_every_route_is_classified_and_only_the_health_checks_are_open():
    seen = set()
    for method, route in routes():
        key = ("GET" if method == "HEAD" else method, route)
        assert key in auth.NEEDS or auth.is_open(route), f"{method} {route} is not in gateway.auth.NEEDS"
        if auth.is_open(route):
            seen.add(route)
    assert seen - {"/dashboard", "/dashboard/", "/dashboard/{name}"} == {"/", "/healthz", "/livez", "/readyz"}
    assert auth.need("GET", None, "/readyz/anything") is auth.OPEN  # Qdrant: a prefix
    assert auth.need("GET", None, "/healthz/x") is auth.ANY  # Qdrant: exact
    assert auth.need("POST", "/some/route/added/later", "/x") == auth.G_MANAGE  # closed until classified


def test_the_routes_table_names_only_real_routes():
    real = {("GET" if m == "HEAD" else m, r) for m, r in routes()}
    assert set(auth.NEEDS) <= real


def test_no_or_wrong_credential_is_401_in_qdrants_words():
    assert refusal(None) == (401, "Must provide an API key or an Authorization bearer token")
    assert refusal("nope") == (401, "Invalid API key or JWT")
    assert refusal(KEY[:-1]) == (401, "Invalid API key or JWT")
    assert refusal("nope", keys=auth.Keys(KEY, None, jwt_rbac=False)) == (401, "Invalid API key or JWT")
    # Open routes need nothing, whatever is sent.
    assert auth.decide(KEYS, "GET", "/healthz", "/healthz", None, None) is None
    assert auth.decide(KEYS, "GET", "/readyz", "/readyz", None, "nope") is None


def test_both_header_forms():
    assert auth.Keys.credential({"api-key": "a"}) == "a"
    assert auth.Keys.credential({"Authorization": "Bearer b"}) == "b"
    assert auth.Keys.credential({"api-key": "a", "Authorization": "Bearer b"}) == "a"
    assert auth.Keys.credential({"Authorization": "Basic b"}) is None
    assert auth.Keys.credential({}) is None


def test_the_keys():
    assert decide(KEY, method="DELETE") is auth.FULL
    assert decide(RO_KEY) is auth.READ_ONLY
    assert decide(RO_KEY, method="POST", route=C + "/points/search") is auth.READ_ONLY
    assert refusal(RO_KEY, method="PUT", route=C + "/points") == (403, "Forbidden: Global manage access is required")
    assert refusal(RO_KEY, method="PUT") == (403, "Forbidden: Global manage access is required")
    assert decide(RO_KEY, route="/cluster", collection=None) is auth.READ_ONLY
    assert auth.Keys.from_settings(Settings().service) is None  # no key: nothing checked
    assert auth.Keys.from_settings(Settings(service={"api_key": ""}).service) is None  # empty = unset, as Qdrant


def test_global_tokens():
    assert decide(token({"access": "r"})) == auth.Access("r")
    assert decide(token({}), method="DELETE") == auth.Access("m")  # no access claim: manage
    assert refusal(token({"access": "r"}), method="POST", route=C + "/points/delete") == \
        (403, "Forbidden: Global manage access is required")


def test_collection_tokens():
    scoped = token({"access": [{"collection": "books", "access": "rw"}, {"collection": "maps", "access": "r"}]})
    assert decide(scoped, method="POST", route=C + "/points/query").collections == {"books": "rw", "maps": "r"}
    decide(scoped, method="PUT", route=C + "/points")
    assert refusal(scoped, method="PUT", route=C + "/points", collection="maps") == \
        (403, "Forbidden: Write access to collection maps is required")
    assert refusal(scoped, collection="other") == (403, "Forbidden: Access to collection other is required")
    assert refusal(scoped, method="DELETE") == (403, "Forbidden: Global access is required")
    assert refusal(scoped, route="/cluster", collection=None) == (403, "Forbidden: Global access is required")
    assert refusal(scoped, method="POST", route="/collections/aliases", collection=None) == \
        (403, "Forbidden: Global access is required")
    access = decide(scoped, route="/collections", collection=None)
    listing = {"collections": [{"name": "books"}, {"name": "other"}, {"name": "maps"}]}
    assert auth.visible(listing, "/collections", access) == {"collections": [{"name": "books"}, {"name": "maps"}]}
    aliases = {"aliases": [{"alias_name": "a", "collection_name": "other"}, {"alias_name": "b", "collection_name": "maps"}]}
    assert auth.visible(aliases, "/aliases", access) == {"aliases": [{"alias_name": "b", "collection_name": "maps"}]}
    assert auth.visible(listing, "/collections", auth.READ_ONLY) == listing


def test_tokens_refused():
    now = int(time.time())
    assert refusal(token({"exp": now - 60})) == (403, "ExpiredSignature")
    assert decide(token({"exp": now - 10})) == auth.FULL  # within Qdrant's 30 s of leeway
    assert refusal(token({"access": "m"}, key="another key")) == (403, "InvalidSignature")
    assert refusal(jwt.encode({"access": "m"}, KEY, algorithm="HS256")) == (401, "Invalid API key or JWT")  # no exp
    assert refusal(token({}, algorithm="HS512")) == (401, "Invalid API key or JWT")
    unsigned = jwt.encode({"exp": now + 600}, None, algorithm="none")
    assert refusal(unsigned) == (401, "Invalid API key or JWT")
    assert refusal(token({"access": "x"})) == (401, "Invalid API key or JWT")
    assert refusal(token({"access": [{"collection": "a", "access": "m"}]})) == (401, "Invalid API key or JWT")
    assert refusal(token({"access": [{"collection": "a", "access": "r"}] * 2}))[0] == 401
    assert refusal(token({"value_exists": {"collection": "a", "matches": []}}))[0] == 401
    assert refusal(token({"access": [{"collection": "a", "access": "r", "payload": {"k": "v"}}]}))[0] == 401
    # Tokens count only with jwt_rbac.
    assert refusal(token({}), keys=auth.Keys(KEY, None, jwt_rbac=False)) == (401, "Invalid API key or JWT")


def test_security_settings_that_cannot_work_are_refused():
    with pytest.raises(settings_module.ConfigError, match="jwt_rbac needs service.api_key"):
        settings_module.load(overrides={"service": {"jwt_rbac": True}})
    with pytest.raises(settings_module.ConfigError, match="enable_tls needs tls.cert and tls.key"):
        settings_module.load(overrides={"service": {"enable_tls": True}})
    with pytest.raises(settings_module.ConfigError, match="verify_https_client_certificate needs"):
        settings_module.load(overrides={"service": {"verify_https_client_certificate": True}})
    loaded = settings_module.load(overrides={"service": {"api_key": KEY}})
    assert KEY not in repr(loaded) and KEY not in str(loaded.model_dump())
