"""Shard snapshots through qdrant-client's shard snapshot calls, and raw HTTP for
what it does not cover (download, upload, wait=false, hostile names): a round
trip; recover by file, by name and by upload after the points changed, which
brings back that shard as it was and leaves the others as they are; a snapshot
taken while a thread writes restores a state the shard had, at the sequence
number its contents belong to; Qdrant's answers to a wrong shard id, collection,
snapshot, checksum, and to a snapshot of another shape or shard."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
import uuid

import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from cluster.placement import shard_of
from tests.api.rawhttp import call, error_text
from tests.api.snapshotting import (
    VECTORS,
    download,
    everything,
    key_folder,
    points,
    prefix,
    raw,
    snapshots_folder,
    upload,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def server(shoal_server, base_url):
    return shoal_server  # a real server: base_url skips without one, and starts it if it went down


def manifest_of(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return json.loads(tar.extractfile("shoal-snapshot.json").read())


def file_uri(server, name: str, shard_id: int, snapshot: str) -> str:
    return (snapshots_folder(server).resolve() / key_folder(name) / "shards" / str(shard_id) / snapshot).as_uri()


def in_shard(state: dict, shard_id: int, shard_number: int) -> dict:
    return {i: p for i, p in state.items() if shard_of(i, shard_number) == shard_id}


def test_create_list_download_delete(server, shoal, collection_names, shard_number):
    name = collection_names("shsnap")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=shard_number)
    shoal.upsert(name, points=points(300), wait=True)
    shard = shard_number - 1

    described = shoal.create_shard_snapshot(name, shard, wait=True)
    assert described.name.startswith(f"{name}-shard-{shard}-") and described.name.endswith(".snapshot")
    assert described.size > 0 and len(described.checksum) == 64
    assert [s.name for s in shoal.list_shard_snapshots(name, shard)] == [described.name]
    assert shoal.list_snapshots(name) == []  # a shard snapshot is no collection snapshot
    if shard_number > 1:
        assert shoal.list_shard_snapshots(name, 0) == []

    data = download(server, name, described.name, shard)
    assert len(data) == described.size and hashlib.sha256(data).hexdigest() == described.checksum
    manifest = manifest_of(data)
    assert (manifest["format"], manifest["collection"], manifest["shard_id"], manifest["shard_number"]) == \
        ("shoal-shard-snapshot", name, shard, shard_number)
    assert manifest["points"] == len(in_shard(everything(shoal, name), shard, shard_number))

    # wait=false: 202 at once, the snapshot appears when done.
    status, body = call("POST", f"{server.url}{prefix(name, shard)}?wait=false")
    assert status == 202 and body["result"] is None and body["status"] == "accepted", body
    deadline = time.monotonic() + 60
    while len(shoal.list_shard_snapshots(name, shard)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    second = [s.name for s in shoal.list_shard_snapshots(name, shard) if s.name != described.name]
    assert len(second) == 1

    assert shoal.delete_shard_snapshot(name, shard, described.name, wait=True) is True
    assert [s.name for s in shoal.list_shard_snapshots(name, shard)] == second
    for method in ("GET", "DELETE"):
        status, body = call(method, f"{server.url}{prefix(name, shard)}/{described.name}")
        assert (status, error_text(body)) == (404, f"Not found: Snapshot {described.name} not found")
    assert shoal.delete_shard_snapshot(name, shard, second[0], wait=True) is True
    assert shoal.list_shard_snapshots(name, shard) == []


def test_recover_by_file_name_and_upload_brings_the_shard_back(server, shoal, collection_names, shard_number):
    name = collection_names("shrec")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=shard_number)
    shoal.create_payload_index(name, "tag", field_schema="keyword", wait=True)
    shoal.upsert(name, points=points(300), wait=True)
    shard = shard_number // 2
    at_snapshot = everything(shoal, name)
    described = shoal.create_shard_snapshot(name, shard, wait=True)
    data = download(server, name, described.name, shard)

    def change(round_: int) -> dict:
        shoal.delete(name, points_selector=models.PointIdsList(points=list(range(round_, 300, 3))), wait=True)
        shoal.set_payload(name, payload={"changed": round_}, points=models.Filter(), wait=True)
        shoal.upsert(name, points=points(40, start=1000 * (round_ + 1)), wait=True)
        return everything(shoal, name)

    def expected(changed: dict) -> dict:
        """The shard as at the snapshot, every other shard as it is now."""
        others = {i: p for i, p in changed.items() if shard_of(i, shard_number) != shard}
        return {**others, **in_shard(at_snapshot, shard, shard_number)}

    recoveries = [
        ("file://", lambda: shoal.recover_shard_snapshot(
            name, shard, location=file_uri(server, name, shard, described.name), checksum=described.checksum,
            wait=True)),
        ("name", lambda: shoal.recover_shard_snapshot(name, shard, location=described.name, wait=True)),
        ("upload", lambda: _upload_ok(server, name, data, shard,
                                      f"wait=true&priority=snapshot&checksum={described.checksum}")),
    ]
    for round_, (how, recover) in enumerate(recoveries):
        changed = change(round_)
        assert recover() is True, how
        assert everything(shoal, name) == expected(changed), how
        assert shoal.count(name).count == len(expected(changed)), how

    # The restored shard serves filtered searches and takes writes.
    hits = shoal.query_points(name, query=[1.0, 3.0, 2.0, 0.5], limit=5, query_filter=models.Filter(
        must=[models.FieldCondition(key="tag", match=models.MatchValue(value="t1"))])).points
    assert len(hits) == 5 and all(h.payload["tag"] == "t1" for h in hits)
    shoal.upsert(name, points=points(1, start=99_999), wait=True)
    assert shoal.retrieve(name, [99_999])[0].payload == {"i": 99_999, "tag": "t0"}


def _upload_ok(server, name: str, data: bytes, shard: int, query: str) -> bool:
    status, answer = upload(server, name, data, shard_id=shard, query=query)
    assert status == 200, answer
    return answer["result"]


def test_a_snapshot_taken_under_writes_restores_consistently(server, shoal, collection_names):
    """A thread writes batches; each batch adds ten points and sets a counter
    point to its number, vector and payload from that number. The snapshot must
    hold the batches up to some n and none after (every point whole), at the
    sequence number of batch n: the restored shard is a state it really had."""
    name = collection_names("shcons")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=1)
    counter = 1_000_000
    operation_of: dict[int, int] = {}
    stop = threading.Event()

    def batch(j: int) -> list[models.PointStruct]:
        return [models.PointStruct(id=i, vector=[1.0, float(j), 1.0, 1.0], payload={"v": j})
                for i in [*range(10 * j, 10 * j + 10), counter]]

    def writer():
        j = 0
        while not stop.is_set() and j < 2000:
            operation_of[j] = shoal.upsert(name, points=batch(j), wait=True).operation_id
            j += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(operation_of) < 20 and thread.is_alive():
            stop.wait(0.05)
        described = shoal.create_shard_snapshot(name, 0, wait=True)
    finally:
        stop.set()
        thread.join(timeout=120)
    last_written = max(operation_of.values())

    assert shoal.recover_shard_snapshot(name, 0, location=described.name, wait=True) is True
    restored = everything(shoal, name)
    n = restored[counter][1]["v"]
    assert set(restored) == {counter, *range(10 * n + 10)}
    for point_id, (vector, payload) in restored.items():
        j = n if point_id == counter else point_id // 10
        assert payload == {"v": j}
        assert abs(vector[1] / vector[0] - j) < 1e-3 * max(1, j)  # Cosine vectors come back normalised
    manifest = manifest_of(download(server, name, described.name, 0))
    assert manifest["seq"] == operation_of[n] + 1 and manifest["points"] == len(restored)
    # Sequence numbers go on past every write made before the recover.
    assert shoal.upsert(name, points=batch(5000), wait=True).operation_id > last_written


HOSTILE_NAMES = ["..%2F..%2F..%2Fvictim.snapshot", "..%2F..%2Fshards%2F0%2F{real}", "%2E%2E", "..",
                 "a%00b.snapshot", "..%5C..%5Cvictim.snapshot", ".work", "%2Fetc%2Fpasswd",
                 "%252E%252E%252Fvictim.snapshot", "x" * 300]


def test_hostile_names_and_locations_are_refused_and_touch_nothing(server, shoal, collection_names, tmp_path):
    name = collection_names("shbad")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=2)
    shoal.upsert(name, points=points(50), wait=True)
    real = shoal.create_shard_snapshot(name, 0, wait=True).name
    before = everything(shoal, name)
    outside = server.storage.parent
    victim = outside / "victim.snapshot"
    victim.write_bytes(b"not to be touched")
    listing = sorted(p.name for p in outside.iterdir())

    for hostile in HOSTILE_NAMES:
        path = f"{prefix(name, 1)}/{hostile.format(real=real)}"
        for method in ("GET", "DELETE"):
            status, body, _ = raw(server, method, path)
            assert status == 404, (method, path, status, body[:200])
            text = error_text(json.loads(body)) if body else None
            assert text is None or text.startswith("Not found: "), (method, path, text)

    elsewhere = tmp_path / "a.snapshot"
    elsewhere.write_bytes(download(server, name, real, 0))
    for location, status_words in [
        ("../../victim.snapshot", (404, "Not found: Snapshot ../../victim.snapshot not found")),
        (real, (404, f"Not found: Snapshot {real} not found")),  # a name of shard 0's, asked of shard 1
        (elsewhere.as_uri(), (400, "snapshots folder only")),
        (victim.as_uri(), (400, "snapshots folder only")),
        ((snapshots_folder(server) / ".." / ".." / "victim.snapshot").as_uri(), (400, "snapshots folder only")),
        ("http://169.254.169.254/latest/meta-data", (400, "scheme http is not supported")),
        ("ftp://example.com/a.snapshot",
         (400, "Wrong input: Invalid snapshot URL ftp://example.com/a.snapshot: "
               "URLs with ftp scheme are not supported")),
    ]:
        status, body = call("PUT", f"{server.url}{prefix(name, 1)}/recover", {"location": location})
        assert status == status_words[0] and status_words[1] in error_text(body), (location, body)

    assert victim.read_bytes() == b"not to be touched"
    assert sorted(p.name for p in outside.iterdir()) == listing
    assert [s.name for s in shoal.list_shard_snapshots(name, 0)] == [real]
    assert everything(shoal, name) == before


def test_qdrant_errors_for_shard_collection_snapshot_and_checksum(server, shoal, collection_names):
    name = collection_names("sherr")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=2)
    shoal.upsert(name, points=points(40), wait=True)
    described = shoal.create_shard_snapshot(name, 1, wait=True)
    data = download(server, name, described.name, 1)
    before = everything(shoal, name)

    # A shard the collection does not have, through the client and every route.
    with pytest.raises(UnexpectedResponse) as raised:
        shoal.create_shard_snapshot(name, 2)
    assert raised.value.status_code == 404
    missing_shard = (404, "Not found: shard 2 not found")
    for method, suffix, payload in [("GET", "", None), ("POST", "", None), ("GET", "/x.snapshot", None),
                                    ("DELETE", "/x.snapshot", None), ("PUT", "/recover", {"location": "x.snapshot"})]:
        status, body = call(method, f"{server.url}{prefix(name, 2)}{suffix}", payload)
        assert (status, error_text(body)) == missing_shard, (method, suffix, body)
    assert upload(server, name, data, shard_id=2)[0] == 404

    # A shard id that is no u32 matches no route: Qdrant's 404 of its path extractor.
    for shard_id in ("x", "-1", "4294967296", "99999999999"):
        status, body = call("GET", f"{server.url}/collections/{name}/shards/{shard_id}/snapshots")
        assert (status, body) == (404, None), shard_id

    # A collection that does not exist.
    unknown = f"nope_{uuid.uuid4().hex[:8]}"
    status, body = call("GET", f"{server.url}{prefix(unknown, 0)}")
    assert (status, error_text(body)) == (404, f"Not found: Collection `{unknown}` doesn't exist!")
    with pytest.raises(UnexpectedResponse) as raised:
        shoal.list_shard_snapshots(unknown, 0)
    assert raised.value.status_code == 404

    # A snapshot that does not exist.
    with pytest.raises(UnexpectedResponse) as raised:
        shoal.delete_shard_snapshot(name, 1, "nope.snapshot")
    assert raised.value.status_code == 404
    status, body = call("PUT", f"{server.url}{prefix(name, 1)}/recover", {"location": "nope.snapshot"})
    assert (status, error_text(body)) == (404, "Not found: Snapshot nope.snapshot not found")

    # Checksums: an upload's as Qdrant's upload words it, a location's as its recover does.
    wrong = "0" * 64
    status, answer = upload(server, name, data, shard_id=1, query=f"checksum={wrong}")
    assert (status, error_text(answer)) == (400, f"Checksum mismatch: expected {described.checksum}, actual {wrong}")
    status, body = call("PUT", f"{server.url}{prefix(name, 1)}/recover",
                        {"location": described.name, "checksum": wrong})
    assert (status, error_text(body)) == (
        400, f"Wrong input: Snapshot checksum mismatch: expected {wrong}, got {described.checksum}")

    # Query and body values Qdrant cannot read.
    status, answer = upload(server, name, data, shard_id=1, query="priority=first")
    assert (status, error_text(answer)) == (
        400, "Deserialize error in query parameters: unknown variant `first`, expected one of "
             "`no_sync`, `snapshot`, `replica`")
    status, body = call("PUT", f"{server.url}{prefix(name, 1)}/recover", {"location": described.name, "priority": 1})
    assert status == 400 and error_text(body).startswith("Format error in JSON body"), body
    status, body = call("PUT", f"{server.url}{prefix(name, 1)}/recover", {})
    assert status == 400 and "missing field `location`" in error_text(body), body
    assert everything(shoal, name) == before

    # wait=false: 202, and the recover happens.
    shoal.delete(name, points_selector=models.PointIdsList(points=list(range(40))), wait=True)
    status, answer = upload(server, name, data, shard_id=1, query="wait=false&priority=replica")
    assert status == 202 and answer["status"] == "accepted", answer
    deadline = time.monotonic() + 60
    while everything(shoal, name) != in_shard(before, 1, 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert everything(shoal, name) == in_shard(before, 1, 2)


def test_snapshots_of_another_shape_shard_or_kind_are_refused(server, shoal, collection_names):
    target = collection_names("shtarget")
    wider = collection_names("shwider")
    more = collection_names("shmore")
    shoal.create_collection(target, vectors_config=VECTORS, shard_number=2)
    shoal.create_collection(wider, vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
                            shard_number=2)
    shoal.create_collection(more, vectors_config=VECTORS, shard_number=3)
    shoal.upsert(target, points=points(30), wait=True)
    shoal.upsert(wider, points=[models.PointStruct(id=1, vector=[1.0] * 8)], wait=True)
    shoal.upsert(more, points=points(5), wait=True)
    before = everything(shoal, target)

    def shard_file(name: str, shard: int) -> bytes:
        return download(server, name, shoal.create_shard_snapshot(name, shard, wait=True).name, shard)

    refusals = [
        (shard_file(wider, 0), 0, "its vectors (size 8, Cosine) are not the collection's (size 4, Cosine)"),
        (shard_file(target, 1), 0, "it holds shard 1 of 2 shards, not shard 0 of 2"),
        (shard_file(more, 0), 0, "it holds shard 0 of 3 shards, not shard 0 of 2"),
    ]
    hashed = " (a point lives in the shard its id hashes to)"
    for data, shard, words in refusals:
        status, answer = upload(server, target, data, shard_id=shard)
        assert status == 400, answer
        text = f"Wrong input: the snapshot does not fit shard {shard} of collection `{target}`: {words}"
        assert error_text(answer) == (text if "vectors" in words else text + hashed)

    collection_file = download(server, target, shoal.create_snapshot(target, wait=True).name)
    status, answer = upload(server, target, collection_file, shard_id=0)
    assert (status, error_text(answer)) == (
        400, "Wrong input: the file is a collection snapshot, not a shard snapshot: recover it as one")
    status, answer = upload(server, target, shard_file(target, 0))
    assert (status, error_text(answer)) == (
        400, "Wrong input: the file is a shard snapshot, not a collection snapshot: recover it as one")
    assert everything(shoal, target) == before

    # A snapshot of the same shard of a collection of the same shape recovers, as in Qdrant.
    twin = collection_names("shtwin")
    shoal.create_collection(twin, vectors_config=VECTORS, shard_number=2)
    shoal.upsert(twin, points=points(30, start=500), wait=True)
    status, answer = upload(server, target, shard_file(twin, 0), shard_id=0)
    assert status == 200, answer
    mixed = everything(shoal, target)
    assert mixed == {**in_shard(before, 1, 2), **in_shard(everything(shoal, twin), 0, 2)}
