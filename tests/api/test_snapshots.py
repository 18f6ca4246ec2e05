"""Collection snapshots through qdrant-client: create, list, download, delete, and
recover from a file in the snapshots folder or from an upload; a snapshot taken
while writes go on restores to a consistent state; hostile snapshot files and
locations change nothing."""

from __future__ import annotations

import io
import json
import tarfile
import threading

import pytest
from qdrant_client import models

from tests.api.rawhttp import call, error_text
from tests.api.snapshotting import VECTORS, download, everything, key_folder, points, snapshots_folder, upload

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def server(shoal_server):
    if shoal_server is None:
        pytest.skip("snapshots need a real Shoal server (SHOAL_TEST_AGAINST_MEMORY=1)")
    shoal_server.ensure_up()
    return shoal_server


def test_create_list_download_delete_and_recover(server, shoal, collection_names, shard_number):
    name = collection_names("snap")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=shard_number)
    shoal.create_payload_index(name, "tag", field_schema="keyword", wait=True)
    shoal.upsert(name, points=points(300), wait=True)
    before = everything(shoal, name)

    described = shoal.create_snapshot(name, wait=True)
    assert described.name.startswith(f"{name}-") and described.name.endswith(".snapshot")
    assert described.size > 0 and len(described.checksum) == 64
    assert [s.name for s in shoal.list_snapshots(name)] == [described.name]
    data = download(server, name, described.name)
    assert len(data) == described.size

    # Change everything, then recover the snapshot from its file: as it was.
    shoal.delete(name, points_selector=models.PointIdsList(points=list(range(0, 300, 2))), wait=True)
    shoal.upsert(name, points=points(50, start=1000), wait=True)
    location = (snapshots_folder(server).resolve() / key_folder(name) / described.name).as_uri()
    assert shoal.recover_snapshot(name, location=location, checksum=described.checksum, wait=True) is True
    assert everything(shoal, name) == before
    info = shoal.get_collection(name)
    assert info.points_count == 300 and info.config.params.shard_number == shard_number
    assert set(info.payload_schema) == {"tag"}
    hits = shoal.query_points(name, query=[1.0, 3.0, 2.0, 0.5], limit=5,
                              query_filter=models.Filter(must=[models.FieldCondition(
                                  key="tag", match=models.MatchValue(value="t1"))])).points
    assert len(hits) == 5 and all(h.payload["tag"] == "t1" for h in hits)

    # An upload of the downloaded file recovers into a collection of another name.
    other = collection_names("snap_copy")
    status, answer = upload(server, other, data)
    assert (status, answer["result"]) == (200, True), answer
    assert everything(shoal, other) == before

    assert shoal.delete_snapshot(name, described.name, wait=True) is True
    assert shoal.list_snapshots(name) == []
    status, body = call("GET", f"{server.url}/collections/{name}/snapshots/{described.name}")
    assert (status, error_text(body)) == (404, f"Not found: Snapshot {described.name} not found")


def test_a_snapshot_taken_under_writes_is_consistent(server, shoal, collection_names):
    """Writes go on while the snapshot is taken; what it holds is a state the
    collection really had: every point written whole (vector and payload of
    the same write), and none of the points it holds is missing from the list
    of acknowledged writes."""
    name = collection_names("snapw")
    shoal.create_collection(name, vectors_config=VECTORS, shard_number=2)
    acknowledged: list[int] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set() and i < 3000:
            batch = [models.PointStruct(id=i + k, vector=[1.0, float(i + k), 1.0, 1.0], payload={"v": i + k})
                     for k in range(20)]
            shoal.upsert(name, points=batch, wait=True)
            acknowledged.extend(p.id for p in batch)
            i += 20

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acknowledged) < 200:
            stop.wait(0.05)
        snapshot = shoal.create_snapshot(name, wait=True)
    finally:
        stop.set()
        thread.join(timeout=120)
    copy = collection_names("snapw_copy")
    location = (snapshots_folder(server).resolve() / key_folder(name) / snapshot.name).as_uri()
    assert shoal.recover_snapshot(copy, location=location, wait=True) is True
    restored = everything(shoal, copy)
    assert restored and set(restored) <= set(acknowledged)
    for point_id, (vector, payload) in restored.items():
        # Vector and payload of one write (Cosine vectors come back normalised: compare a ratio).
        assert payload == {"v": point_id}
        assert abs(vector[1] / vector[0] - point_id) < 1e-3 * max(1, point_id)


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for arcname, data in members.items():
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _symlink_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("shards/0/meta.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    return buffer.getvalue()


MANIFEST = json.dumps({"format": "shoal-collection-snapshot", "v": 1, "collection": "x",
                       "config": {"params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1}},
                       "shards": [{"seq": 0, "points": 0}]}).encode()


@pytest.mark.parametrize("data, words", [
    (b"not a tar at all", "not a Shoal snapshot"),
    (_tar({"../../escape.txt": b"x", "shoal-snapshot.json": MANIFEST}), "unexpected member"),
    (_tar({"/etc/cron.d/x": b"x", "shoal-snapshot.json": MANIFEST}), "unexpected member"),
    (_tar({"shoal-snapshot.json": MANIFEST, "shards/0/evil.py": b"x"}), "unexpected member"),
    (_symlink_tar(), "unexpected member"),
    (_tar({"shards/0/meta.json": b"{}"}), "no manifest"),
    (_tar({"shoal-snapshot.json": b'{"format": "other"}'}), "not a Shoal snapshot of version 1"),
    (_tar({"shoal-snapshot.json": MANIFEST}), "lacks shard 0"),
], ids=["not-tar", "dotdot", "absolute", "unknown-file", "symlink", "no-manifest", "foreign", "no-shard"])
def test_hostile_snapshot_files_are_refused_and_change_nothing(server, shoal, collection_names, data, words):
    name = collection_names("snapbad")
    shoal.create_collection(name, vectors_config=VECTORS)
    shoal.upsert(name, points=points(10), wait=True)
    before = everything(shoal, name)
    outside = server.storage.parent
    listing = sorted(p.name for p in outside.iterdir())
    status, answer = upload(server, name, data)
    assert status == 400 and words in error_text(answer), answer
    assert everything(shoal, name) == before
    assert sorted(p.name for p in outside.iterdir()) == listing
    assert not (server.storage.parent / "escape.txt").exists()


def test_locations_outside_the_snapshots_folder_are_refused(server, shoal, collection_names, tmp_path):
    name = collection_names("snaploc")
    shoal.create_collection(name, vectors_config=VECTORS)
    elsewhere = tmp_path / "a.snapshot"
    elsewhere.write_bytes(_tar({"shoal-snapshot.json": MANIFEST}))
    for location, words in [
        (elsewhere.as_uri(), "snapshots folder only"),
        ((snapshots_folder(server) / ".." / ".." / "a.snapshot").as_uri(), "snapshots folder only"),
        ("http://169.254.169.254/latest/meta-data", "scheme http is not supported"),
        ((snapshots_folder(server) / "missing.snapshot").as_uri(), "does not exist"),
    ]:
        status, body = call("PUT", f"{server.url}/collections/{name}/snapshots/recover", {"location": location})
        assert status == 400 and words in error_text(body), (location, body)
    status, body = call("PUT", f"{server.url}/collections/{name}/snapshots/recover", {"location": "no-scheme"})
    assert status == 400 and error_text(body).startswith("Format error in JSON body"), body
    assert shoal.count(name).count == 0


def test_an_upload_without_a_snapshot_field_or_not_multipart_is_refused(server, shoal, collection_names):
    name = collection_names("snapform")
    shoal.create_collection(name, vectors_config=VECTORS)
    status, answer = upload(server, name, b"data", field="other")
    assert status == 400 and error_text(answer) == "Bad request: no field `snapshot` in the upload"
    status, body = call("POST", f"{server.url}/collections/{name}/snapshots/upload", {"snapshot": "x"})
    assert status == 400 and "multipart/form-data" in error_text(body), body
