"""The gateways' Raft traffic is authenticated with the cluster secret: nodes with
different secrets never form a cluster, and nothing unauthenticated reaching a
Raft port is unpickled (PySyncObj's protocol is pickle over TCP)."""

from __future__ import annotations

import pickle
import socket
import struct
import zlib
from pathlib import Path

import pytest

from cluster import keys
from cluster.metadata import MetadataStore, RaftTimings
from cluster.metadata_ops import CreateCollection
from gateway import settings as settings_module
from tests.test_metadata import CONFIG, free_ports, leader_of, tick_until


class _Marker:
    """Unpickling this creates a file: proof that a message was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _store(folder: Path, addrs: list[str], i: int, password: str | None) -> MetadataStore:
    return MetadataStore(folder / f"node{i}", self_address=addrs[i], partners=addrs, auto_tick=False,
                         timings=RaftTimings.fast_test(), password=password)


def test_nodes_with_the_secret_form_a_cluster_and_a_stranger_is_left_out(tmp_path):
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    good = keys.raft_password("s3cret", addrs)
    nodes = [_store(tmp_path, addrs, 0, good), _store(tmp_path, addrs, 1, good),
             _store(tmp_path, addrs, 2, keys.raft_password("wrong", addrs))]
    try:
        assert tick_until(nodes[:2], lambda: leader_of(nodes[:2]) is not None, timeout=10)
        leader = leader_of(nodes[:2])
        proposal = leader.submit(CreateCollection("a", CONFIG))
        assert tick_until(nodes, lambda: proposal.done(), timeout=10) and proposal.result() is True
        for _ in range(300):  # the stranger hears nothing it can read, and learns nothing
            for n in nodes:
                n.tick(0.0)
        assert nodes[2].collections() == {} and nodes[2].leader is None
        assert list(nodes[0].collections()) == list(nodes[1].collections()) == ["a"]
    finally:
        for n in nodes:
            n.close()


def _send_pickle(store: MetadataStore, port: int, payload: bytes) -> None:
    """One PySyncObj frame (<i32 length><zlib(pickle)>) to the Raft port, as a
    stranger would send it, while the store runs."""
    data = zlib.compress(payload)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(50):  # let it accept the connection
            store.tick(0.001)
        sock.sendall(struct.pack("i", len(data)) + data)
        for _ in range(200):  # and read what came
            store.tick(0.001)


@pytest.mark.parametrize("protected", [True, False], ids=["with-password", "without-password"])
def test_nothing_unauthenticated_is_unpickled(tmp_path, protected):
    (port,) = free_ports(1)
    addr = f"127.0.0.1:{port}"
    password = keys.raft_password(None, []) if protected else None
    store = MetadataStore(tmp_path / "raft", self_address=addr, auto_tick=False,
                          timings=RaftTimings.fast_test(), password=password)
    marker = tmp_path / "unpickled"
    try:
        assert store.wait_ready(5)
        _send_pickle(store, port, pickle.dumps(_Marker(marker)))
        # Without a password PySyncObj unpickles whatever arrives: the reason every
        # Shoal gateway runs with one (a random one when it has no peers).
        assert marker.exists() is (not protected)
        assert store.propose(CreateCollection("a", CONFIG), timeout=5) is True
    finally:
        store.close()


def test_a_single_gateway_gets_a_random_password_and_peers_need_the_secret():
    first, second = keys.raft_password(None, []), keys.raft_password(None, [])
    assert first != second and len(first) == 64
    assert keys.raft_password("s", ["h:1"]) == keys.raft_password("s", []) != keys.raft_password("t", [])
    assert keys.derive("s", keys.RAFT_LABEL) != keys.derive("s", keys.SHARD_WIRE_LABEL)
    with pytest.raises(keys.SecretRequired):
        keys.raft_password(None, ["10.0.0.2:6335"])


def test_settings_refuse_peers_without_a_secret_and_hide_it():
    with pytest.raises(ValueError, match="cluster.secret is required"):
        settings_module.load(overrides={"cluster": {"raft_peers": ["10.0.0.2:6335"]}})
    with pytest.raises(ValueError, match="cluster.raft_peers needs cluster.ray_address"):
        settings_module.load(overrides={"cluster": {"raft_peers": ["10.0.0.2:6335"], "secret": "s3cret"}})
    loaded = settings_module.load(overrides={"cluster": {"raft_peers": ["10.0.0.2:6335"], "secret": "s3cret",
                                                         "ray_address": "10.0.0.1:6379"}})
    assert loaded.cluster.secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded) and "s3cret" not in str(loaded.model_dump())
