"""Running ``shoal ingest`` against the session's server, and reading points back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"loaded (\d+) points, rejected (\d+) rows, skipped (\d+) parts \((\d+) points\)")


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    out.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return out


def command(server, collection: str, work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", "ingest", "--collection", collection, "--url", server.url,
            "--storage", str(server.storage), "--rejects", str(work / "rejects.jsonl"), *args]


def ingest(server, collection: str, work: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command(server, collection, work, *args), cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def summary(done: subprocess.CompletedProcess) -> dict[str, int]:
    match = SUMMARY.search(done.stdout)
    assert match, f"no summary in: {done.stdout!r}\nstderr: {done.stderr[-3000:]}"
    loaded, rejected, parts, points = map(int, match.groups())
    return {"loaded": loaded, "rejected": rejected, "skipped_parts": parts, "skipped_points": points}


def records(client, collection: str) -> dict:
    """Every point as {id: (vector, payload)}, read with scroll."""
    out, offset = {}, None
    while True:
        page, offset = client.scroll(collection, limit=1000, offset=offset, with_payload=True, with_vectors=True)
        for r in page:
            out[r.id] = (r.vector, r.payload)
        if offset is None:
            return out


def assert_same_records(got: dict, want: dict) -> None:
    assert sorted(got, key=str) == sorted(want, key=str)
    for point_id, (vector, payload) in want.items():
        got_vector, got_payload = got[point_id]
        assert got_payload == payload, point_id
        if isinstance(vector, dict):
            assert set(got_vector) == set(vector), point_id
            for name in vector:
                np.testing.assert_allclose(got_vector[name], vector[name], rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(got_vector, vector, rtol=1e-5, atol=1e-6)
