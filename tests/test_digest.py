"""shard.digest: the same points give the same hash in any order of writing; any
change to an id, a vector component, a vector's presence or a payload value
changes it."""

import uuid

import numpy as np
import pytest

from shard.digest import content_digest
from shard.local_shard import LocalShard
from shard.types import Distance, OptimizersConfig, ShardConfig, VectorParams

DIM = 8


def config(names=("",), dim=DIM, distance=Distance.DOT):
    return ShardConfig(vectors={n: VectorParams(dim, distance) for n in names},
                       optimizers=OptimizersConfig(indexing_threshold=0))


def upsert(ids, vectors, payloads=None, name=""):
    return {"type": "upsert", "ids": list(ids), "vectors": {name: np.asarray(vectors, dtype=np.float32)},
            "payloads": payloads}


def points(n, rng, dim=DIM):
    ids = [i if i % 3 else str(uuid.UUID(int=i + 1)) for i in range(n)]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    payloads = [{"n": i, "tag": f"t{i % 4}", "nested": {"b": [1, 2.5, None], "a": "x"}} for i in range(n)]
    return ids, vectors, payloads


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def shard(path, cfg=None):
    return LocalShard(path, cfg or config(), background_indexing=False)


def test_same_points_in_any_order_same_hash(tmp_path, rng):
    ids, vectors, payloads = points(200, rng)
    a = shard(tmp_path / "a")
    a.apply(upsert(ids, vectors, payloads))
    b = shard(tmp_path / "b")
    order = rng.permutation(200)
    for chunk in np.array_split(order, 7):  # other batches, other order
        b.apply(upsert([ids[i] for i in chunk], vectors[chunk], [payloads[i] for i in chunk]))
    assert a.digest() == b.digest()
    assert a.digest().points_count == 200 and len(a.digest().content_hash) == 32


def test_history_does_not_matter_only_content(tmp_path, rng):
    """Deleted and re-used offsets, overwritten points: only what is held counts."""
    ids, vectors, payloads = points(50, rng)
    a = shard(tmp_path / "a")
    a.apply(upsert(ids, vectors, payloads))
    b = shard(tmp_path / "b")
    b.apply(upsert(range(1000, 1030), rng.normal(size=(30, DIM)), None))  # points later deleted
    b.apply(upsert(ids[::-1], vectors[::-1] * 2, None))  # other vectors, no payloads, then fixed
    b.apply({"type": "delete_points", "ids": list(range(1000, 1030))})
    b.apply(upsert(ids[::-1], vectors[::-1], payloads[::-1]))
    assert a.digest() == b.digest()


def test_payload_key_order_does_not_matter(tmp_path, rng):
    a, b = shard(tmp_path / "a"), shard(tmp_path / "b")
    v = rng.normal(size=(1, DIM))
    a.apply(upsert([1], v, [{"x": 1, "y": {"p": 1, "q": 2}}]))
    b.apply(upsert([1], v, [{"y": {"q": 2, "p": 1}, "x": 1}]))
    assert a.digest() == b.digest()


def test_every_single_change_moves_the_hash(tmp_path, rng):
    ids, vectors, payloads = points(100, rng)
    base = shard(tmp_path / "base")
    base.apply(upsert(ids, vectors, payloads))
    before = base.digest()
    seen = {before.content_hash}

    def changed(mutate) -> str:
        folder = tmp_path / f"c{len(seen)}"
        s = shard(folder)
        v, p, i = vectors.copy(), [dict(x) for x in payloads], list(ids)
        mutate(v, p, i)
        s.apply(upsert(i, v, p))
        digest = s.digest()
        assert digest.content_hash not in seen
        seen.add(digest.content_hash)
        return digest.content_hash

    for row in (0, 1, 57, 99):
        for col in (0, 3, DIM - 1):
            changed(lambda v, p, i, r=row, c=col: v.__setitem__((r, c), np.nextafter(v[r, c], np.float32(9))))
    changed(lambda v, p, i: p[5].__setitem__("n", 6))  # one payload value
    changed(lambda v, p, i: p[5]["nested"].__setitem__("a", "y"))
    changed(lambda v, p, i: p[5].__setitem__("n", 5.0))  # same number, other JSON type
    changed(lambda v, p, i: p[7].pop("tag"))
    changed(lambda v, p, i: i.__setitem__(4, 10_000))  # one id
    # Two points trading their vectors, or their payloads.
    changed(lambda v, p, i: v.__setitem__([1, 2], v[[2, 1]]))
    changed(lambda v, p, i: p.__setitem__(slice(1, 3), [p[2], p[1]]))


def test_writes_after_the_digest_are_seen(tmp_path, rng):
    ids, vectors, payloads = points(20, rng)
    s = shard(tmp_path)
    s.apply(upsert(ids, vectors, payloads))
    first = s.digest()
    assert s.digest() is first  # kept while nothing changes
    s.apply({"type": "set_payload", "ids": [ids[3]], "payload": {"extra": True}})
    second = s.digest()
    assert second != first and second.points_count == 20
    s.apply({"type": "delete_points", "ids": [ids[0]]})
    assert s.digest().points_count == 19


def test_named_vectors_presence_and_names(tmp_path, rng):
    cfg = config(names=("a", "b"))
    v = rng.normal(size=(3, DIM))
    both = shard(tmp_path / "both", cfg)
    both.apply({"type": "upsert", "ids": [1, 2, 3], "vectors": {"a": v.astype(np.float32), "b": v.astype(np.float32)}})
    only_a = shard(tmp_path / "only_a", cfg)
    only_a.apply(upsert([1, 2, 3], v, name="a"))
    swapped = shard(tmp_path / "swapped", cfg)
    swapped.apply(upsert([1, 2, 3], v, name="b"))
    zero_b = shard(tmp_path / "zero_b", cfg)
    zero_b.apply({"type": "upsert", "ids": [1, 2, 3],
                  "vectors": {"a": v.astype(np.float32), "b": np.zeros((3, DIM), np.float32)}})
    hashes = {s.digest().content_hash for s in (both, only_a, swapped, zero_b)}
    assert len(hashes) == 4  # a zero vector is not an absent one
    only_a.apply({"type": "update_vectors", "ids": [1, 2, 3], "vectors": {"b": v.astype(np.float32)}})
    assert only_a.digest() == both.digest()
    both.apply({"type": "delete_vectors", "ids": [2], "names": ["b"]})
    assert both.digest() != only_a.digest()


@pytest.mark.parametrize("dim", [1, 3, 8, 385])
def test_odd_and_even_dimensions(tmp_path, rng, dim):
    data = rng.normal(size=(40, dim))
    a, b = shard(tmp_path / "a", config(dim=dim)), shard(tmp_path / "b", config(dim=dim))
    a.apply(upsert(range(40), data))
    b.apply(upsert(range(39, -1, -1), data[::-1]))
    assert a.digest() == b.digest()
    c = shard(tmp_path / "c", config(dim=dim))
    changed = data.astype(np.float32)
    changed[17, dim - 1] = np.nextafter(changed[17, dim - 1], np.float32(9))
    c.apply(upsert(range(40), changed))
    assert c.digest() != a.digest()


def test_empty_shards_agree(tmp_path):
    a, b = shard(tmp_path / "a"), shard(tmp_path / "b")
    b.apply(upsert([1], np.ones((1, DIM))))
    b.apply({"type": "delete_points", "ids": [1]})
    assert a.digest() == b.digest() and a.digest().points_count == 0


def test_survives_a_restart(tmp_path, rng):
    ids, vectors, payloads = points(30, rng)
    s = shard(tmp_path)
    s.apply(upsert(ids, vectors, payloads))
    before = s.digest()
    s.close()
    assert shard(tmp_path).digest() == before


def test_plain_arrays_and_big_integers():
    """content_digest on bare arrays; a payload integer beyond 64 bits still hashes."""
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    live = np.array([True, False, True])
    present = np.array([True, True, True])
    ids = [5, None, 6]
    small = content_digest(ids, live, {"": (data, present)}, [{"n": 1}, None, {"n": 2}])
    big = content_digest(ids, live, {"": (data, present)}, [{"n": 1}, None, {"n": 2**70}])
    assert small.points_count == big.points_count == 2 and small != big
    # The free offset's row is not part of the content.
    other = data.copy()
    other[1] = 99
    assert content_digest(ids, live, {"": (other, present)}, [{"n": 1}, None, {"n": 2}]) == small
