"""A tiny HTTP helper for tests that check Shoal's wire format byte for byte.

Uses only the standard library so it behaves the same under any qdrant-client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def call(method: str, url: str, body: Any = None, *, raw: bytes | None = None,
         timeout: float = 60) -> tuple[int, Any]:
    """One request; returns (status, parsed JSON or text). Never raises on 4xx/5xx."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


def error_text(body: Any) -> str | None:
    """The message of Qdrant's error envelope ``{"status": {"error": ...}, "time": ...}``."""
    if isinstance(body, dict) and isinstance(body.get("status"), dict):
        return body["status"].get("error")
    return None
