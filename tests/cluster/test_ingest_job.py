"""``shoal ingest`` submitted as a Ray job, into a replicated collection.

The cluster: a Ray head (n1) with Ray's job server (its dashboard, on its own
address) and two workers (n2, n3), one CPU each, host the replicas; a gateway on n4
(no CPU) with a cluster secret. ``ray job submit`` runs from n4 against the head's
job server with ``-- python -m gateway ingest …`` (the ``shoal ingest`` command), as
``deploy/kuberay/rayjob-ingest.yaml`` has KubeRay do. The job's driver joins the
cluster the way any Ray job does and writes to the shards' primaries, which forward
to the other replicas: afterwards both replicas of each shard hold every point, and
the answers are those of Qdrant's own implementation on the same points.
"""

from __future__ import annotations

import sys
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient, models

from tests.cluster import gateways, rest
from tests.cluster.conftest import need
from tests.cluster.connections import escapes
from tests.cluster.netns import Network
from tests.cluster.raynodes import FAST_HEALTH_CHECKS, RayCluster

SECRET = "ingest job test secret, long enough"
DIM, SHARDS, POINTS = 16, 2, 3000
JOB_PORT = 8265


@pytest.fixture(scope="module")
def cluster():
    need()
    network = Network(4)
    head = network.hosts[0].address
    made = RayCluster(network, [1, 1, 1, 0], env=FAST_HEALTH_CHECKS,
                      head_args=["--include-dashboard", "true", "--dashboard-host", head,
                                 "--dashboard-port", str(JOB_PORT)])
    try:
        made.start()
        yield made
    finally:
        made.stop()
        network.close()


def test_ingest_as_a_ray_job_fills_every_replica(cluster):
    scratch = cluster.network.scratch
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((POINTS, DIM)).astype(np.float32)
    table = pa.table({"id": pa.array(range(POINTS), pa.uint64()),
                      "vector": pa.array(vectors.tolist(), pa.list_(pa.float32())),
                      "payload": pa.array([{"i": i, "even": i % 2 == 0} for i in range(POINTS)])})
    source = scratch / "points.parquet"
    pq.write_table(table, source)

    gateway = gateways.start(cluster, cluster.network.hosts[3], 6333, scratch / "storage", SECRET)
    try:
        client = QdrantClient(url=gateway.url, timeout=60)
        client.create_collection("jobs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                                 shard_number=SHARDS, replication_factor=2)
        job = f"ingest-{uuid.uuid4().hex[:8]}"
        entrypoint = [sys.executable, "-m", "gateway", "ingest", "--collection", "jobs", "--url", gateway.url,
                      "--rejects", str(scratch / "rejects.jsonl"), "--part-rows", "1000", str(source)]
        submit = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address",
                  f"http://{cluster.head.host.address}:{JOB_PORT}", "--submission-id", job, "--", *entrypoint]
        proc = cluster.popen(cluster.network.hosts[3], submit, "job-submit", pipes=True)
        output, _ = proc.communicate(timeout=300)
        text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
        assert f"Job '{job}' succeeded" in text, text[-4000:]
        assert "loaded 3000 points, rejected 0 rows" in text, text[-4000:]

        replicas = rest.replicas(gateway, "jobs")
        assert len(replicas) == SHARDS * 2 and {r["state"] for r in replicas} == {"Active"}, replicas
        for shard in range(SHARDS):  # both copies of each shard hold the same points
            hashes = {r["hash"] for r in replicas if r["shard_id"] == shard}
            assert len(hashes) == 1 and None not in hashes, replicas
        assert client.count("jobs", exact=True).count == POINTS

        reference = QdrantClient(":memory:")
        reference.create_collection("jobs", vectors_config=models.VectorParams(size=DIM,
                                                                              distance=models.Distance.COSINE))
        reference.upsert("jobs", [models.PointStruct(id=i, vector=vectors[i].tolist(),
                                                     payload={"i": i, "even": i % 2 == 0}) for i in range(POINTS)])
        for seed in range(3):
            query = np.random.default_rng(100 + seed).standard_normal(DIM).tolist()
            for consistency in (None, models.ReadConsistencyType.ALL):
                got = client.query_points("jobs", query=query, limit=10, consistency=consistency).points
                want = reference.query_points("jobs", query=query, limit=10).points
                assert [p.id for p in got] == [p.id for p in want]
                assert [p.payload for p in got] == [p.payload for p in want]
        assert [str(c) for c in escapes(cluster.network, cluster.pids())] == []
    finally:
        gateway.stop()
