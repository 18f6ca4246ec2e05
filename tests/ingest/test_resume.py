"""A load killed (SIGKILL) midway and run again ends with every point exactly once,
equal to the source, and the second run skips the parts the first one finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import numpy as np
import pytest
from qdrant_client import models

from .helpers import REPO, assert_same_records, command, env, ingest, records, summary

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
N, DIM, PART = 12_000, 16, 100


def test_killed_load_resumes(shoal_server, shoal, tmp_path):
    if shoal_server is None:
        pytest.skip("shoal ingest needs a real Shoal server")
    shoal_server.ensure_up()
    name = f"ingest_resume_{uuid.uuid4().hex[:8]}"
    shoal.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                            shard_number=3)
    try:
        rng = np.random.default_rng(7)
        vectors = rng.normal(size=(N, DIM)).astype(np.float32)
        source = tmp_path / "points.jsonl"
        with open(source, "w") as f:
            for i, v in enumerate(vectors):
                f.write(json.dumps({"id": i, "vector": v.tolist(), "payload": {"i": i}}) + "\n")

        first = subprocess.Popen(command(shoal_server, name, tmp_path, "--part-rows", str(PART), "--parallelism",
                                         "1", str(source)),
                                 cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
        progress = tmp_path / ".shoal-ingest"
        deadline = time.monotonic() + 180
        recorded = 0
        while time.monotonic() < deadline and first.poll() is None:
            files = list(progress.glob("*.parts.jsonl")) if progress.is_dir() else []
            recorded = sum(1 for _ in open(files[0])) if files else 0
            if recorded >= 3:
                break
            time.sleep(0.005)
        assert first.poll() is None, f"the first run ended before it could be killed: {first.communicate()}"
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
        done_before = sum(1 for _ in open(next(progress.glob("*.parts.jsonl"))))
        assert 3 <= done_before < N // PART

        second = ingest(shoal_server, name, tmp_path, "--part-rows", str(PART), str(source))
        assert second.returncode == 0, second.stderr
        got = summary(second)
        assert got["skipped_parts"] >= done_before  # a line cut short by the kill is written again
        assert got["skipped_parts"] > 0 and got["rejected"] == 0
        assert got["loaded"] + got["skipped_points"] == N
        assert shoal.count(name, exact=True).count == N
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        want = {i: (unit[i], {"i": i}) for i in range(N)}
        assert_same_records(records(shoal, name), want)
    finally:
        shoal.delete_collection(name)
