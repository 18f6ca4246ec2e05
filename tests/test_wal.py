"""The shard's durability layer: op codec, write-ahead log, crash-safe file writes.

The kill test at the bottom is the contract in miniature: a process appending as fast
as it can is SIGKILLed at a random instant, and every seq it had acknowledged must
replay, byte for byte.
"""

from __future__ import annotations

import inspect
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shard import codec, fileio
from shard.wal import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    CorruptWal,
    WalError,
    WriteAheadLog,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def assert_same(a, b):
    """Deep equality that also checks array dtype/shape and int-vs-float."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


# ---------------------------------------------------------------------------
# Codec.
# ---------------------------------------------------------------------------


def upsert_op(n: int = 50, dim: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "type": "upsert",
        "ids": [2**64 - 1, 0, "9f8e7d6c-5b4a-4321-8765-0123456789ab"] + list(range(1, n - 2)),
        "vectors": {"": rng.random((n, dim), dtype=np.float32),
                    "img": rng.random((n, 3), dtype=np.float32)},
        "vector_mask": {"img": rng.random(n) > 0.5},
        "payloads": [{"i": i, "f": i / 3, "s": "ünï😀", "l": [1, 2.0, None, True], "n": {"x": {}}}
                     if i % 4 else None for i in range(n)],
    }


def test_codec_round_trips_an_upsert_exactly():
    op = upsert_op()
    assert_same(codec.decode(codec.encode(op)), op)


@pytest.mark.parametrize("op", [
    {"type": "delete_points", "filter": {"must": [{"key": "a", "match": {"value": 1}}]}},
    {"type": "set_payload", "ids": [1], "payload": {"k": 1.0, "big": -(2**63)}, "key": None},
    {"type": "create_index", "field": "a.b", "schema": {"type": "keyword", "is_tenant": True}},
    {"empty": np.zeros((0, 384), dtype=np.float32), "zero_d": np.array(1.5, dtype=np.float32),
     "b": np.array(True), "be": np.arange(6, dtype=">f4").reshape(2, 3),
     "noncontig": np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2],
     "deep": [[{"v": np.ones(3, dtype=bool)}]], "nan": np.array([np.nan, -np.inf], np.float32)},
])
def test_codec_round_trips_every_shape(op):
    out = codec.decode(codec.encode(op))
    expect = {k: (np.array(v, order="C") if isinstance(v, np.ndarray) else v) for k, v in op.items()}
    assert_same(out, expect)


def test_codec_numpy_scalars_become_json_numbers():
    op = {"ids": [np.uint64(2**64 - 1), np.int32(-3)], "f": np.float32(0.5), "b": np.bool_(False)}
    assert_same(codec.decode(codec.encode(op)), {"ids": [2**64 - 1, -3], "f": 0.5, "b": False})


def test_codec_arrays_are_writable_copies():
    data = codec.encode({"v": np.ones((2, 2), np.float32)})
    arr = codec.decode(data)["v"]
    arr[0, 0] = 5  # must not raise, must not touch data
    assert codec.decode(data)["v"][0, 0] == 1


def test_codec_handles_ints_beyond_64_bits_and_lone_surrogates():
    op = {"ids": [2**64, -(2**63) - 1, 2**200], "s": "a\ud800b", "v": np.arange(3, dtype=np.float32)}
    assert_same(codec.decode(codec.encode(op)), op)


def test_codec_payload_spelling_the_markers_is_not_mistaken_for_an_array():
    fake = {"__nd__": 0, "dtype": "<f4", "shape": [1]}
    op = {"payloads": [fake, {"__esc__": [["a", 1]]}, "__nd__"], "v": np.ones(2, np.float32),
          "after": {"__nd__": 7}}
    assert_same(codec.decode(codec.encode(op)), op)


@pytest.mark.parametrize("bad", [{"s": {1, 2}}, {"o": np.array([object()])}, {1: "int key"},
                                 {"x": object()}, {"big": 2**70, 1: "x"}])
def test_codec_refuses_values_json_cannot_hold(bad):
    with pytest.raises(TypeError):
        codec.encode(bad)


def test_codec_rejects_truncated_or_foreign_bytes():
    data = codec.encode(upsert_op(10))
    for cut in (0, 3, 12, 40, len(data) - 1):
        with pytest.raises(codec.CodecError):
            codec.decode(data[:cut])
    with pytest.raises(codec.CodecError):
        codec.decode(b"\x09" + data[1:])
    with pytest.raises(codec.CodecError):
        codec.decode(data + b"\0" * 8)


def test_codec_round_trips_a_large_upsert():
    """(Its speed is measured by ``python -m bench.micro``.)"""
    n, dim = 1000, 384
    rng = np.random.default_rng(1)
    op = {"type": "upsert", "ids": list(range(n)), "vectors": {"": rng.random((n, dim), dtype=np.float32)},
          "payloads": [{"city": "Berlin", "n": i, "tags": ["a", "b"]} for i in range(n)]}
    back = codec.decode(codec.encode(op))
    assert back["ids"] == op["ids"] and back["payloads"] == op["payloads"]
    assert np.array_equal(back["vectors"][""], op["vectors"][""])


json_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8)
             | st.floats(allow_nan=False, allow_infinity=False))
arrays = st.builds(lambda shape, seed, kind: np.asarray(np.random.default_rng(seed).random(shape) > 0.5) if kind
                   else np.asarray(np.random.default_rng(seed).random(shape, dtype=np.float32)),
                   st.lists(st.integers(0, 4), max_size=3).map(tuple), st.integers(0, 9), st.booleans())
values = st.recursive(json_leaf | arrays, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6) | st.sampled_from(["__nd__", "__esc__", "dtype"]),
                                        inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None, database=None)
@given(values)
def test_codec_round_trips_any_json_with_arrays(value):
    assert_same(codec.decode(codec.encode(value)), value)


# ---------------------------------------------------------------------------
# Write-ahead log.
# ---------------------------------------------------------------------------


def rec(seq: int, size: int = 40) -> bytes:
    """A record whose bytes say which seq it was appended as."""
    return (f"record-{seq}-".encode() * (size // 10 + 1))[:size]


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.wal"))


def test_append_replay_round_trip(tmp_path):
    with WriteAheadLog(tmp_path / "wal") as wal:
        assert wal.first_seq == 1 and wal.last_seq == 0 and wal.next_seq == 1
        assert [wal.append(rec(i)) for i in range(1, 6)] == [1, 2, 3, 4, 5]
        assert wal.append_many([rec(6), bytearray(rec(7)), memoryview(rec(8))]) == [6, 7, 8]
        assert wal.append(b"") == 9
        got = list(wal.replay())
    assert got == [(i, rec(i)) for i in range(1, 9)] + [(9, b"")]


def test_replay_after_seq_and_reopen_continues_seqs(tmp_path):
    with WriteAheadLog(tmp_path) as wal:
        wal.append_many([rec(i) for i in range(1, 11)])
    with WriteAheadLog(tmp_path) as wal:
        assert wal.last_seq == 10 and wal.synced_seq == 10
        assert [s for s, _ in wal.replay(7)] == [8, 9, 10]
        assert list(wal.replay(10)) == [] and list(wal.replay(99)) == []
        assert wal.append(rec(11)) == 11
    with WriteAheadLog(tmp_path) as wal:
        assert list(wal.replay(9)) == [(10, rec(10)), (11, rec(11))]


def test_record_reads_one_seq_across_segments_and_truncation(tmp_path):
    with WriteAheadLog(tmp_path, segment_bytes=4096) as wal:
        wal.append_many([rec(i, 300) for i in range(1, 41)])  # several segments
        assert [wal.record(s) for s in (1, 17, 40)] == [rec(1, 300), rec(17, 300), rec(40, 300)]
        assert wal.record(0) is None and wal.record(41) is None
        wal.truncate_before(20)
        assert wal.record(wal.first_seq - 1) is None and wal.record(25) == rec(25, 300)


def test_flush_tracks_what_is_synced_and_is_cheap_when_nothing_is_pending(tmp_path):
    with WriteAheadLog(tmp_path) as wal:
        wal.append(rec(1))
        assert wal.synced_seq == 0
        wal.flush(fsync=False)
        assert wal.synced_seq == 0
        wal.flush()
        assert wal.synced_seq == 1
        wal.flush()  # nothing pending: a no-op (its cost is measured by python -m bench.micro)
        assert wal.synced_seq == 1


def test_flush_outside_syncs_without_the_writers_lock_and_shares_one_fsync(tmp_path, monkeypatch):
    """The fdatasync runs with the caller's lock free (a writer appends meanwhile),
    and callers waiting on one fdatasync mostly find their records synced by it."""
    import threading

    lock, calls, inside, release = threading.Lock(), [], threading.Event(), threading.Event()
    real = os.fdatasync

    def fdatasync(fd):
        calls.append(lock.locked())
        inside.set()
        release.wait(10)
        real(fd)

    with WriteAheadLog(tmp_path) as wal:
        with lock:
            wal.append(rec(1))
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        first = threading.Thread(target=wal.flush_outside, args=(lock,))
        first.start()
        assert inside.wait(10)
        with lock:  # free while the first fdatasync runs: a writer goes on
            wal.append(rec(2))
        others = [threading.Thread(target=wal.flush_outside, args=(lock,)) for _ in range(4)]
        for t in others:
            t.start()
        time.sleep(0.05)
        release.set()
        for t in [first, *others]:
            t.join(10)
        assert wal.synced_seq == 2
        assert calls == [False, False]  # one for record 1, one shared by the four that waited for it
        wal.flush_outside(lock)  # nothing pending: no fdatasync
        assert len(calls) == 2


def test_a_failed_flush_outside_leaves_the_log_refusing_writes(tmp_path, monkeypatch):
    import threading

    def fdatasync(fd):
        raise OSError(5, "Input/output error")

    lock = threading.Lock()
    with WriteAheadLog(tmp_path) as wal:
        wal.append(rec(1))
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        with pytest.raises(WalError, match="fsync failed"):
            wal.flush_outside(lock)
        assert wal.synced_seq == 0
        with pytest.raises(WalError, match="unusable"):
            wal.append(rec(2))
        monkeypatch.undo()


def test_replay_does_not_see_records_appended_after_it_started(tmp_path):
    with WriteAheadLog(tmp_path) as wal:
        wal.append_many([rec(i) for i in range(1, 4)])
        it = wal.replay()
        wal.append(rec(4))
        assert [s for s, _ in it] == [1, 2, 3]


def test_closed_log_refuses_work(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.close()
    wal.close()
    for call in (lambda: wal.append(b"x"), wal.flush, lambda: wal.replay()):
        with pytest.raises(WalError):
            call()


def _build(path: Path, n: int, size: int = 40) -> Path:
    with WriteAheadLog(path) as wal:
        wal.append_many([rec(i, size) for i in range(1, n + 1)])
    (seg,) = segment_files(path)
    return seg


def test_torn_tail_at_every_byte_of_the_last_frame(tmp_path):
    src = tmp_path / "src"
    seg = _build(src, 3)
    full = seg.read_bytes()
    frame = FRAME_HEADER_SIZE + 40
    last_start = len(full) - frame
    assert last_start == SEGMENT_HEADER_SIZE + 2 * frame
    for cut in range(last_start, len(full)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(full[:cut])
        with WriteAheadLog(d) as wal:
            assert wal.last_seq == 2, cut
            assert (d / seg.name).stat().st_size == last_start
            assert wal.append(b"new") == 3
        with WriteAheadLog(d) as wal:
            assert list(wal.replay()) == [(1, rec(1)), (2, rec(2)), (3, b"new")]
        shutil.rmtree(d)


@pytest.mark.parametrize("where", ["length", "crc", "seq", "payload"])
def test_flipped_bit_in_the_last_segment_drops_the_tail(tmp_path, caplog, where):
    seg = _build(tmp_path, 5)
    data = bytearray(seg.read_bytes())
    frame = FRAME_HEADER_SIZE + 40
    third = SEGMENT_HEADER_SIZE + 2 * frame
    offset = third + {"length": 0, "crc": 5, "seq": 9, "payload": 30}[where]
    data[offset] ^= 0x10
    seg.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path) as wal:
        assert wal.last_seq == 2
        assert "dropping" in caplog.text and seg.name in caplog.text
        assert wal.append(b"after") == 3
        assert list(wal.replay()) == [(1, rec(1)), (2, rec(2)), (3, b"after")]


def test_zero_filled_tail_is_dropped(tmp_path):
    seg = _build(tmp_path, 2)
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)
    with WriteAheadLog(tmp_path) as wal:
        assert wal.last_seq == 2
        assert list(wal.replay()) == [(1, rec(1)), (2, rec(2))]


def test_segments_roll_and_replay_across_them(tmp_path):
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        for i in range(1, 101):
            assert wal.append(rec(i, 100)) == i
        assert wal.synced_seq >= 90  # rolling fsyncs the closed segment
    assert len(segment_files(tmp_path)) > 5
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        assert list(wal.replay()) == [(i, rec(i, 100)) for i in range(1, 101)]
        assert [s for s, _ in wal.replay(55)] == list(range(56, 101))


def test_corruption_in_an_older_segment_is_an_error_naming_the_file(tmp_path):
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        for i in range(1, 40):
            wal.append(rec(i, 100))
    first = segment_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE + 3] ^= 1
    first.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        with pytest.raises(CorruptWal, match=first.name):
            list(wal.replay())
        # A replay that starts after the damaged record does not need it.
        assert [s for s, _ in wal.replay(5)][:2] == [6, 7]


def test_truncated_older_segment_is_an_error(tmp_path):
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        for i in range(1, 40):
            wal.append(rec(i, 100))
    first = segment_files(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-10])
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        with pytest.raises(CorruptWal, match=first.name):
            list(wal.replay())


def test_bad_segment_header_is_an_error(tmp_path):
    seg = _build(tmp_path, 2)
    data = bytearray(seg.read_bytes())
    data[2] ^= 1
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptWal, match=seg.name):
        WriteAheadLog(tmp_path)


def test_truncate_before_drops_whole_segments_and_keeps_seqs(tmp_path):
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        for i in range(1, 61):
            wal.append(rec(i, 100))
        before = len(segment_files(tmp_path))
        wal.truncate_before(30)
        assert 1 < wal.first_seq <= 31
        assert len(segment_files(tmp_path)) < before
        assert [s for s, _ in wal.replay(30)] == list(range(31, 61))
        with pytest.raises(WalError, match="truncated"):
            list(wal.replay(0))
        first = wal.first_seq
    with WriteAheadLog(tmp_path, segment_bytes=1024) as wal:
        assert wal.first_seq == first and wal.last_seq == 60
        assert wal.append(b"x") == 61


def test_truncate_everything_retires_the_active_segment(tmp_path):
    with WriteAheadLog(tmp_path) as wal:
        wal.append_many([rec(i) for i in range(1, 11)])
        wal.truncate_before(10)
        assert wal.first_seq == 11 and wal.last_seq == 10
        assert list(wal.replay(10)) == []
        assert [p.name for p in segment_files(tmp_path)] == [f"{11:020d}.wal"]
    with WriteAheadLog(tmp_path) as wal:
        assert wal.next_seq == 11
        assert wal.append(b"y") == 11
        assert list(wal.replay(10)) == [(11, b"y")]


def test_truncate_beyond_the_log_moves_next_seq_past_the_snapshot(tmp_path):
    """A snapshot may cover seqs a power cut took from the log's unsynced tail: new
    records must then get seqs above the snapshot's, or replay would skip them."""
    with WriteAheadLog(tmp_path) as wal:
        wal.append_many([rec(i) for i in range(1, 4)])
        wal.truncate_before(50)
        assert wal.next_seq == 51
        assert wal.append(b"z") == 51
    with WriteAheadLog(tmp_path) as wal:
        assert list(wal.replay(50)) == [(51, b"z")]
    empty = tmp_path / "empty"
    with WriteAheadLog(empty) as wal:
        wal.truncate_before(7)
        assert wal.next_seq == 8
    with WriteAheadLog(empty) as wal:
        assert wal.next_seq == 8 and wal.first_seq == 8


def test_crash_between_retiring_and_deleting_segments_is_finished_on_open(tmp_path):
    wal_dir = tmp_path / "wal"
    with WriteAheadLog(wal_dir, segment_bytes=1024) as wal:
        for i in range(1, 31):
            wal.append(rec(i, 100))
    backup = {p.name: p.read_bytes() for p in segment_files(wal_dir)}
    with WriteAheadLog(wal_dir, segment_bytes=1024) as wal:
        wal.truncate_before(40)
    # Put the deleted files back, as if the crash came before the deletions.
    for name, data in backup.items():
        (wal_dir / name).write_bytes(data)
    with WriteAheadLog(wal_dir, segment_bytes=1024) as wal:
        assert [p.name for p in segment_files(wal_dir)] == [f"{41:020d}.wal"]
        assert wal.next_seq == 41 and list(wal.replay(40)) == []


def test_leftover_segment_tmp_file_is_removed(tmp_path):
    _build(tmp_path, 2)
    (tmp_path / f"{3:020d}.wal.tmp").write_bytes(b"half a header")
    with WriteAheadLog(tmp_path) as wal:
        assert wal.last_seq == 2 and wal.append(b"q") == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_refused_record_leaves_the_log_usable(tmp_path):
    with WriteAheadLog(tmp_path) as wal:
        wal.append(b"ok")
        with pytest.raises(TypeError):
            wal.append("not bytes")  # type: ignore[arg-type]
        assert wal.append(b"ok2") == 2
        assert [r for _, r in wal.replay()] == [b"ok", b"ok2"]


# ---------------------------------------------------------------------------
# Crash-safe files and directories.
# ---------------------------------------------------------------------------


def test_atomic_write_and_json(tmp_path):
    target = tmp_path / "a" / "b.json"
    fileio.ensure_dir(target.parent)
    fileio.write_json(target, {"id": 2**64 - 1, "s": "ü"})
    fileio.write_json(target, {"id": 1})
    assert fileio.read_json(target) == {"id": 1}
    assert fileio.read_json(tmp_path / "missing.json", default=None) is None
    with pytest.raises(FileNotFoundError):
        fileio.read_json(tmp_path / "missing.json")
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def _write_version(tmp: Path, version: str) -> None:
    (tmp / "data").write_text(version)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "x").write_text(version)


def test_replace_dir_swaps_whole_versions(tmp_path):
    final = tmp_path / "snapshot"
    assert fileio.recover_dir(final) is None
    fileio.replace_dir(final, lambda t: _write_version(t, "v1"))
    fileio.replace_dir(final, lambda t: _write_version(t, "v2"))
    assert fileio.recover_dir(final) == final
    assert (final / "data").read_text() == "v2" and (final / "sub" / "x").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot"]

    def failing(t: Path) -> None:
        _write_version(t, "v3")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fileio.replace_dir(final, failing)
    assert (final / "data").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot"]


@pytest.mark.parametrize("state, expect", [
    # (final, tmp complete?, old) -> version found after recovery
    (("v1", None, None), "v1"),                  # nothing in flight
    (("v1", "incomplete", None), "v1"),          # crash while writing tmp
    (("v1", "complete", None), "v1"),            # crash before moving final aside
    ((None, "complete", "v1"), "v2"),            # crash between the two renames
    ((None, "incomplete", "v1"), "v1"),          # (cannot happen, but rolls back)
    (("v2", None, "v1"), "v2"),                  # crash before dropping .old
    ((None, "incomplete", None), None),          # first snapshot never finished
    ((None, "complete", None), "v2"),            # first snapshot, crash before rename
])
def test_recover_dir_after_a_crash_at_every_step(tmp_path, state, expect):
    final = tmp_path / "snapshot"
    tmp, old = tmp_path / "snapshot.tmp", tmp_path / "snapshot.old"
    final_v, tmp_state, old_v = state
    if final_v:
        final.mkdir()
        _write_version(final, final_v)
    if tmp_state:
        tmp.mkdir()
        _write_version(tmp, "v2")
        if tmp_state == "complete":
            (tmp / fileio.COMPLETE_MARKER).touch()
    if old_v:
        old.mkdir()
        _write_version(old, old_v)
    found = fileio.recover_dir(final)
    if expect is None:
        assert found is None
    else:
        assert found == final and (final / "data").read_text() == expect
    assert not tmp.exists() and not old.exists()


# ---------------------------------------------------------------------------
# kill -9 at a random moment.
# ---------------------------------------------------------------------------

def expected_record(seq: int) -> bytes:
    """Mostly small records, and every 16th a big one, so that kills also land inside
    a write (which leaves a torn frame). Its source is part of the writer script."""
    size = 1_500_000 if seq % 16 == 0 else (seq * 31) % 300
    return ((b"%d:" % seq) * (size // 3 + 1))[:size]


WRITER = inspect.getsource(expected_record) + textwrap.dedent("""
    import sys
    from shard.wal import WriteAheadLog
    wal = WriteAheadLog(sys.argv[1], segment_bytes=4 << 20)
    while True:
        seq = wal.next_seq
        got = wal.append(expected_record(seq))
        if got != seq:
            raise SystemExit(f"seq {got} != {seq}")
        if seq % 50 == 0:
            wal.flush()
        print(seq, flush=True)
        if seq % 40 == 0:  # as a shard does after each snapshot; announced first
            print("T", seq - 20, flush=True)
            wal.truncate_before(seq - 20)
""")


def test_sigkill_at_a_random_moment_loses_no_acknowledged_record(tmp_path):
    rng = random.Random(20240607)
    wal_dir = tmp_path / "wal"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    acknowledged: list[int] = []
    floor = 0  # records <= floor may have been truncated on purpose

    def take(line: bytes) -> None:
        nonlocal floor
        parts = line.split()
        if parts[0] == b"T":
            floor = max(floor, int(parts[1]))
        else:
            acknowledged.append(int(parts[0]))

    for _round in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(wal_dir)], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wanted = rng.randint(30, 300)
            deadline = time.monotonic() + 20
            seen = 0
            while seen < wanted and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                take(line)
                seen += 1
            time.sleep(rng.random() * 0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            # Read what is left through the same buffered reader (communicate()
            # would skip lines that readline() already buffered).
            for line in proc.stdout.read().splitlines():
                take(line)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        assert seen == wanted, err.decode()
        with WriteAheadLog(wal_dir, segment_bytes=4 << 20) as wal:
            assert wal.first_seq <= floor + 1
            replayed = dict(wal.replay(floor))
        for seq in acknowledged:
            if seq > floor:
                assert replayed.get(seq) == expected_record(seq), seq
        assert sorted(replayed) == list(range(floor + 1, floor + 1 + len(replayed)))
    assert len(acknowledged) > 200 and floor > 0
