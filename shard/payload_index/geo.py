"""Geo points: the geo index, and the geometry that geo conditions and formulas share.

Qdrant measures distances and tests polygons with the geo crate; these functions mirror
it (``Haversine`` with the IUGG mean Earth radius, ``Polygon::contains``) so that an
indexed condition, a payload scan (``shard.filters``) and a ``geo_distance`` formula
(``gateway.formula``) give the same answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shard.payload_index.base import FieldIndex
from shard.payload_index.values import as_number

EARTH_RADIUS_M = 6371008.8  # geo crate's Haversine: mean Earth radius (IUGG)


def as_geo(value: Any) -> tuple[float, float] | None:
    """``(lon, lat)`` of an object with numeric ``lon`` and ``lat`` (what a geo condition
    reads from the payload; other keys are ignored), else None."""
    if type(value) is not dict:
        return None
    lon, lat = as_number(value.get("lon")), as_number(value.get("lat"))
    if lon is None or lat is None:
        return None
    return lon, lat


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in meters: the geo crate's ``Haversine`` formula."""
    theta1, theta2 = math.radians(lat1), math.radians(lat2)
    d_theta, d_lambda = math.radians(lat2 - lat1), math.radians(lon2 - lon1)
    a = math.sin(d_theta / 2) ** 2 + math.cos(theta1) * math.cos(theta2) * math.sin(d_lambda / 2) ** 2
    return EARTH_RADIUS_M * 2 * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))


def haversine_np(lon1: float, lat1: float, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    """``haversine_m`` from one point to arrays of points."""
    theta1, theta2 = np.radians(lat1), np.radians(lat2)
    d_theta, d_lambda = np.radians(lat2 - lat1), np.radians(lon2 - lon1)
    a = np.sin(d_theta / 2) ** 2 + np.cos(theta1) * np.cos(theta2) * np.sin(d_lambda / 2) ** 2
    return EARTH_RADIUS_M * 2 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _on_segment(x, y, x1, y1, x2, y2) -> bool:
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    return cross == 0 and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)


def _ring_position(x: float, y: float, ring: list[tuple[float, float]]) -> int:
    """1 inside, 0 on the boundary, -1 outside (ray casting)."""
    inside = False
    n = len(ring)
    for i in range(n):
        x1, y1 = ring[i]
        x2, y2 = ring[(i + 1) % n]
        if _on_segment(x, y, x1, y1, x2, y2):
            return 0
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return 1 if inside else -1


def polygon_contains(lon: float, lat: float, exterior: list, interiors: list) -> bool:
    """The geo crate's ``Polygon::contains``: strictly inside the exterior ring and
    neither inside nor on the boundary of a hole. Rings are lists of ``(lon, lat)``."""
    if _ring_position(lon, lat, exterior) != 1:
        return False
    return all(_ring_position(lon, lat, hole) == -1 for hole in interiors)


class GeoIndex(FieldIndex):
    """Points as ``lon + i*lat``; only valid coordinates are indexed, as Qdrant's
    ``GeoPoint`` deserialisation demands."""

    kind = "geo"
    dtype = np.complex128

    def _convert(self, value):
        g = as_geo(value)
        if g is not None and -180 <= g[0] <= 180 and -90 <= g[1] <= 90:
            return complex(g[0], g[1])
        return None

    def geo_mask(self, vec_pred, exact, size):
        """``vec_pred(lon, lat)`` on arrays; ``exact(lon, lat)``, when given, refines the
        candidates ``vec_pred`` selected (polygons: bounding box, then the exact test)."""
        mask = self.col.mask(lambda a: vec_pred(a.real, a.imag), size)
        if exact is not None:
            for o in np.flatnonzero(mask).tolist():
                if not any(exact(v.real, v.imag) for v in self.col.values(o)):
                    mask[o] = False
        return mask
