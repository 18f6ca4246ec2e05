"""The shard's write-ahead log.

Every update is appended here before it is acknowledged: ``append`` hands the framed
record to the kernel with one ``os.writev`` (so a process killed a microsecond later
still leaves it in the page cache, and the file), and ``flush()`` fsyncs. A shard
answers ``wait=false`` after ``append`` and ``wait=true`` after apply + ``flush()``.

On disk: a directory of segment files named by the first sequence number they hold,
``00000000000000000001.wal``, each one

    header (32 bytes): b"SHOALWAL" | u32 format | u64 first_seq | u64 floor | u32 crc32
    frames:            u32 length | u32 crc32(length, seq, payload) | u64 seq | payload

all little-endian. Sequence numbers are u64, start at 1 and never repeat or go back,
across restarts and truncations (the next one is the last frame's + 1, or the name of
the empty last segment). A replica logs with ``append_at(seq, ...)``, which insists on
that next number, so its log numbers every write as the primary's does. ``floor`` is
non-zero only in a segment started by ``truncate_before``: every record <= floor is
covered by a snapshot, so older segments that a crash kept from being deleted are
deleted on the next open.

Crash handling, decided deliberately:
- The LAST segment is the only place a crash can tear (kill -9 mid-write, or a power
  cut before fsync). Opening scans it and truncates it at the first frame that is
  short, fails its CRC, or breaks the seq sequence, with a warning: nothing there was
  ever fsynced-and-acknowledged past the tear, and later appends must not sit behind
  garbage. (A bit flipped inside already-fsynced data of the last segment is dropped
  the same way together with what follows it; a torn write and rot cannot be told
  apart from the bytes alone, and appending after rot is worse.)
- A bad frame in an OLDER segment cannot come from a crash: each segment is fsynced
  before the next one is created. Dropping it would silently lose acknowledged
  writes, or resurrect points whose delete was acknowledged, so :class:`CorruptWal`
  names the file and offset and the operator decides (restore a replica or a snapshot).
  Older segments are verified while they are replayed, not at open, so opening costs
  only the last segment's scan.
- Segment files are created as ``.tmp`` + fsync + rename, so a named segment always
  has a whole header; a bad header is corruption.

Threading: one writer. ``append``, ``append_many``, ``append_at``, ``flush``,
``truncate_before`` and ``close`` must be called by one thread at a time (the shard
holds its update lock). ``flush_outside(lock)`` is the exception: given that lock, it
holds it only around its bookkeeping, so writes go on during the fdatasync, and
concurrent callers share one (group commit). ``replay`` reads through its own file
handles and may run while appends continue (it stops at the records that existed
when it was called), but not during ``truncate_before``, which deletes files.

Startup protocol for a shard: open the log, load the snapshot (covering seq S, or
S = 0), ``truncate_before(S, keep_bytes)`` (guarantees new seqs > S even if a power cut
lost an unsynced tail the snapshot had seen), then ``replay(S)``.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
import threading
from dataclasses import dataclass, field
from pathlib import Path

from shard.fileio import ensure_dir, fsync_dir

logger = logging.getLogger(__name__)

MAGIC = b"SHOALWAL"
FORMAT = 1
_SEG_HEADER = struct.Struct("<8sIQQ")  # + u32 crc
SEGMENT_HEADER_SIZE = _SEG_HEADER.size + 4  # 32
_FRAME = struct.Struct("<IIQ")  # length, crc, seq
FRAME_HEADER_SIZE = _FRAME.size  # 16
_LEN_SEQ = struct.Struct("<IQ")
MAX_RECORD_BYTES = (1 << 32) - 1
MAX_SEQ = (1 << 64) - 1
DEFAULT_SEGMENT_BYTES = 64 << 20
_IOV_MAX = 512
_MARK_EVERY = 256  # a segment remembers the offset of every 256th frame (see _Segment.marks)
_SEG_NAME = re.compile(r"^(\d{20})\.wal$")


class WalError(Exception):
    """The log cannot do what was asked (I/O failure, closed, records gone)."""


class CorruptWal(WalError):
    """A segment other than the last holds bad data. Names the file and offset."""

    def __init__(self, path: Path, offset: int, reason: str):
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt write-ahead log segment {path} at byte {offset}: {reason}")


@dataclass
class _Segment:
    path: Path
    first_seq: int
    floor: int
    # marks[k]: byte offset of the frame of seq first_seq + k * _MARK_EVERY, for the
    # frames seen so far (by the scan at open or a replay). A replay from the middle
    # of a segment starts at the nearest mark instead of walking every frame before
    # it, so a replica catching up in batches costs O(batch), not O(segment), a batch.
    marks: list[int] = field(default_factory=lambda: [SEGMENT_HEADER_SIZE])


def _next_mark(seg: _Segment) -> int:
    """The seq of the first frame of ``seg`` whose offset is not yet marked."""
    return seg.first_seq + len(seg.marks) * _MARK_EVERY


def _frame_crc(length: int, seq: int, payload) -> int:
    return zlib.crc32(payload, zlib.crc32(_LEN_SEQ.pack(length, seq)))


def _segment_header(first_seq: int, floor: int) -> bytes:
    head = _SEG_HEADER.pack(MAGIC, FORMAT, first_seq, floor)
    return head + struct.pack("<I", zlib.crc32(head))


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.wal"


def _check_frame(f, offset: int, file_size: int, expected: int) -> tuple[str | None, int]:
    """Reads the frame at ``offset`` from ``f``: (None, payload length) if whole and
    valid, else (why not, 0)."""
    head = f.read(FRAME_HEADER_SIZE)
    if len(head) < FRAME_HEADER_SIZE:
        return "torn frame header", 0
    length, crc, seq = _FRAME.unpack(head)
    if offset + FRAME_HEADER_SIZE + length > file_size:
        return "torn frame", 0
    payload = f.read(length)
    if len(payload) < length:
        return "torn frame", 0
    if crc != _frame_crc(length, seq, payload):
        return "checksum mismatch", 0
    if seq != expected:
        return f"seq {seq} where {expected} was expected", 0
    return None, length


class WriteAheadLog:
    """An append-only, segmented, checksummed log of opaque records (see module doc)."""

    def __init__(self, path_dir: str | os.PathLike, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES):
        if segment_bytes < SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE:
            raise ValueError(f"segment_bytes too small: {segment_bytes}")
        self.path = ensure_dir(path_dir)
        self.segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._size = 0  # bytes in the active (last) segment
        self._next_seq = 1
        self._synced_seq = 0
        self._broken: BaseException | None = None
        self._marking = threading.Lock()  # concurrent replays extend a segment's marks
        self._syncing = threading.Lock()  # one ``flush_outside`` fdatasync at a time
        self._open()

    # -- properties ---------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The seq the next appended record will get."""
        return self._next_seq

    @property
    def last_seq(self) -> int:
        """The seq of the last appended record (first_seq - 1 when the log is empty)."""
        return self._next_seq - 1

    @property
    def first_seq(self) -> int:
        """The oldest seq still in the log (== next_seq when it holds no record)."""
        return self._segments[0].first_seq

    @property
    def synced_seq(self) -> int:
        """Every record up to this seq is fsynced (survives a power cut)."""
        return self._synced_seq

    def disk_bytes(self) -> int:
        """Bytes used by all segment files."""
        return sum(self._segment_sizes())

    def _segment_sizes(self) -> list[int]:
        """Bytes of each segment file, oldest first."""
        sizes = []
        for seg in self._segments[:-1]:
            try:
                sizes.append(seg.path.stat().st_size)
            except FileNotFoundError:
                sizes.append(0)
        return sizes + [self._size]

    # -- opening ------------------------------------------------------------

    def _open(self) -> None:
        for stale in self.path.glob("*.wal.tmp"):
            stale.unlink()
        found: list[_Segment] = []
        for entry in sorted(os.listdir(self.path)):
            m = _SEG_NAME.match(entry)
            if m:
                found.append(self._read_header(self.path / entry, int(m.group(1))))
        if not found:
            self._create_segment(1, 0)
            found = [_Segment(self.path / _segment_name(1), 1, 0)]
        found.sort(key=lambda s: s.first_seq)
        # Finish a truncate_before that a crash interrupted: drop whole segments
        # at or below the highest floor.
        floor = max(s.floor for s in found)
        while len(found) > 1 and found[1].first_seq - 1 <= floor:
            found[0].path.unlink()
            found.pop(0)
        fsync_dir(self.path)
        self._segments = found
        active = found[-1]
        self._next_seq, self._size = self._scan_last(active)
        self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        # A killed writer leaves records in the page cache only: make them durable
        # now, so that synced_seq is true from the start.
        os.fdatasync(self._fd)
        self._synced_seq = self._next_seq - 1

    def _read_header(self, path: Path, named_seq: int) -> _Segment:
        with open(path, "rb") as f:
            raw = f.read(SEGMENT_HEADER_SIZE)
        if len(raw) < SEGMENT_HEADER_SIZE:
            raise CorruptWal(path, 0, "segment header is incomplete")
        magic, fmt, first_seq, floor = _SEG_HEADER.unpack_from(raw)
        (crc,) = struct.unpack_from("<I", raw, _SEG_HEADER.size)
        if magic != MAGIC or crc != zlib.crc32(raw[: _SEG_HEADER.size]):
            raise CorruptWal(path, 0, "bad segment header")
        if fmt != FORMAT:
            raise CorruptWal(path, 0, f"unknown segment format {fmt}")
        if first_seq != named_seq:
            raise CorruptWal(path, 0, f"header says first seq {first_seq}, name says {named_seq}")
        return _Segment(path, first_seq, floor)

    def _scan_last(self, seg: _Segment) -> tuple[int, int]:
        """Validates the last segment frame by frame; truncates it at the first bad
        frame. Returns (next seq, valid size)."""
        expected = seg.first_seq
        offset = SEGMENT_HEADER_SIZE
        reason = None
        due = _next_mark(seg)
        with open(seg.path, "rb", buffering=1 << 20) as f:
            file_size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            while offset < file_size:
                reason, length = _check_frame(f, offset, file_size, expected)
                if reason is not None:
                    break
                if expected == due:
                    due = self._mark(seg, expected, offset)
                offset += FRAME_HEADER_SIZE + length
                expected += 1
        if offset < file_size:
            logger.warning(
                "write-ahead log %s: dropping %d bytes from byte %d on (%s); "
                "records up to seq %d are intact", seg.path, file_size - offset, offset, reason, expected - 1)
            fd = os.open(seg.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        return expected, offset

    # -- writing ------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._fd is None:
            raise WalError("write-ahead log is closed")
        if self._broken is not None:
            raise WalError(f"write-ahead log is unusable after a failed write: {self._broken!r}")

    def append(self, record: bytes | bytearray | memoryview) -> int:
        """Logs one record; returns its seq once the kernel has it (not yet fsynced)."""
        return self.append_many([record])[0]

    def append_at(self, seq: int, record: bytes | bytearray | memoryview) -> int:
        """Logs one record as number ``seq``, which must be ``next_seq`` (WalError,
        and nothing written, otherwise): a replica logs the primary's records under
        the primary's numbers, so both logs number every write alike."""
        self._check_writable()
        if seq != self._next_seq:
            raise WalError(f"cannot log seq {seq}: the next seq of this log is {self._next_seq}")
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[bytes | bytearray | memoryview]) -> list[int]:
        """Logs records in order with a single write; returns their seqs."""
        self._check_writable()
        if not records:
            return []
        seq = self._next_seq
        if seq + len(records) - 1 > MAX_SEQ:
            raise WalError("write-ahead log sequence numbers exhausted")
        bufs: list = []
        seqs: list[int] = []
        for record in records:
            payload = memoryview(record).cast("B")
            length = payload.nbytes
            if length > MAX_RECORD_BYTES:
                raise ValueError(f"record of {length} bytes is too large for the write-ahead log")
            bufs.append(_FRAME.pack(length, _frame_crc(length, seq, payload), seq))
            bufs.append(payload)
            seqs.append(seq)
            seq += 1
        total = sum(memoryview(b).nbytes for b in bufs)
        self._write_all(bufs)
        self._next_seq = seq
        self._size += total
        if self._size >= self.segment_bytes:
            # The records are logged whatever happens here: a failed roll must not
            # look like a failed append (it is retried on the next one).
            try:
                self._roll(self._next_seq, 0)
            except (OSError, WalError) as e:
                logger.warning("write-ahead log %s: cannot start a new segment: %s", self.path, e)
        return seqs

    def _write_all(self, bufs: list) -> None:
        start = self._size
        try:
            i = 0
            while i < len(bufs):
                chunk = bufs[i : i + _IOV_MAX]
                written = os.writev(self._fd, chunk)
                for b in chunk:
                    n = memoryview(b).nbytes
                    if written >= n:
                        written -= n
                        i += 1
                    else:
                        bufs[i] = memoryview(b).cast("B")[written:]
                        break
        except OSError as e:
            # Keep the file ending on a whole frame, or refuse all further appends.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._broken = e
            raise WalError(f"write-ahead log append failed: {e}") from e

    def flush(self, fsync: bool = True) -> None:
        """Makes every appended record durable. Records are handed to the kernel by
        ``append`` already, so only ``fsync=True`` does anything, and only when some
        record is not yet synced: cheap to call after every group of appends."""
        self._check_writable()
        if fsync and self._synced_seq < self.last_seq:
            last = self.last_seq
            self._fsync()
            self._synced_seq = last

    def flush_outside(self, lock: threading.RLock | threading.Lock) -> None:
        """``flush()`` for a caller whose ``lock`` guards this log: the lock is held
        to look and to record, not during the fdatasync (of a duplicate of the active
        segment's descriptor), so appends and reads go on meanwhile. Group commit:
        one fdatasync at a time, and a caller that waited for another's usually
        finds its records synced by it. Must be called without ``lock`` held.
        A segment rolled meanwhile was fsynced by the roll; one deleted meanwhile
        is synced as harmlessly as before."""
        with self._syncing:
            with lock:
                self._check_writable()
                last = self.last_seq
                if self._synced_seq >= last:
                    return
                fd = os.dup(self._fd)
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
            with lock:
                self._synced_seq = max(self._synced_seq, last)

    def _fsync(self, fd: int | None = None) -> None:
        """fdatasync the active segment (through ``fd``, a duplicate of its descriptor,
        when given). A failed fsync leaves the log unusable: the kernel may have
        dropped the dirty pages it could not write, so a retry could "succeed" over
        lost data (PostgreSQL's fsync lesson)."""
        try:
            os.fdatasync(self._fd if fd is None else fd)
        except OSError as e:
            self._broken = e
            raise WalError(f"write-ahead log fsync failed: {e}") from e

    # -- segments -----------------------------------------------------------

    def _create_segment(self, first_seq: int, floor: int) -> Path:
        """A new segment holding only its header, made durable under its final name
        by tmp + fsync + rename + fsync(dir): a named segment never has a torn header."""
        path = self.path / _segment_name(first_seq)
        if path.exists():
            if path.stat().st_size > SEGMENT_HEADER_SIZE:
                raise WalError(f"segment {path} exists already")
            path.unlink()  # left by a roll that failed after creating it
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, _segment_header(first_seq, floor))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(self.path)
        return path

    def _roll(self, first_seq: int, floor: int) -> None:
        """Closes the active segment (fsynced, so only the new last one can tear)
        and starts a new one holding records from ``first_seq``."""
        self._fsync()
        self._synced_seq = self.last_seq
        path = self._create_segment(first_seq, floor)
        os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._segments.append(_Segment(path, first_seq, floor))
        self._size = SEGMENT_HEADER_SIZE

    def truncate_before(self, seq: int, keep_bytes: int = 0) -> None:
        """Drops records <= ``seq`` (a durable snapshot covers them) where whole
        segments allow, and guarantees ``next_seq > seq`` from now on, across restarts.

        ``keep_bytes`` keeps the newest covered records anyway, as many whole
        segments as it takes for the log to hold at least that many bytes (the
        active segment always stays then): a replica that fell behind reads them
        (``replay``) instead of needing a whole copy. A snapshot beyond the log
        (``seq >= next_seq``: a power cut took an unsynced tail the snapshot had
        seen) drops every record all the same, since the log would have a hole.

        When every record is dropped, the active segment is retired too: a new
        empty segment starting at max(next_seq, seq + 1), with floor ``seq``, is made
        durable first, then the old files are deleted oldest first, so a crash in
        between only leaves files the next open deletes. (Retained segments carry
        no floor: a crash while deleting them leaves only more retained records.)
        """
        self._check_writable()
        if seq <= 0:
            return
        if seq >= self._next_seq:
            keep_bytes = 0
        active = self._segments[-1]
        active_has_records = self.last_seq >= active.first_seq
        if seq >= self.last_seq and ((active_has_records and keep_bytes <= 0) or seq >= self._next_seq):
            self._roll(max(self._next_seq, seq + 1), seq)
            self._next_seq = self._segments[-1].first_seq
            self._synced_seq = max(self._synced_seq, self._next_seq - 1)
        sizes = self._segment_sizes() if keep_bytes > 0 else []
        kept = sum(sizes)  # bytes of the segments not yet deleted
        deleted = False
        while len(self._segments) > 1 and self._segments[1].first_seq - 1 <= seq:
            if keep_bytes > 0:
                if kept - sizes[0] < keep_bytes:
                    break
                kept -= sizes.pop(0)
            self._segments.pop(0).path.unlink(missing_ok=True)
            deleted = True
        if deleted:
            fsync_dir(self.path)

    # -- reading ------------------------------------------------------------

    def replay(self, after_seq: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yields (seq, record) for every record with seq > ``after_seq`` that exists
        now, in order, verifying checksums. WalError if records after ``after_seq``
        were already truncated; CorruptWal for a bad frame in a closed segment."""
        if self._fd is None:
            raise WalError("write-ahead log is closed")
        if after_seq < self.first_seq - 1:
            raise WalError(
                f"write-ahead log starts at seq {self.first_seq}: records "
                f"{after_seq + 1}..{self.first_seq - 1} were truncated")
        segments = list(self._segments)
        end_seq = self.last_seq
        active_size = self._size
        return self._replay(segments, after_seq, end_seq, active_size)

    def record(self, seq: int) -> bytes | None:
        """The record logged at ``seq``, or None when the log does not hold it
        (truncated, or not written yet)."""
        if not self.first_seq <= seq <= self.last_seq:
            return None
        records = self.replay(after_seq=seq - 1)
        try:
            found, record = next(records, (None, None))
        finally:
            records.close()
        return record if found == seq else None

    def _replay(self, segments: list[_Segment], after_seq: int, end_seq: int,
                active_size: int) -> Iterator[tuple[int, bytes]]:
        for i, seg in enumerate(segments):
            is_last = i == len(segments) - 1
            seg_end = end_seq if is_last else segments[i + 1].first_seq - 1
            if seg_end <= after_seq or seg_end < seg.first_seq:
                continue
            yield from self._replay_segment(seg, after_seq, seg_end, active_size if is_last else None)

    def _replay_segment(self, seg: _Segment, after_seq: int, seg_end: int,
                        size: int | None) -> Iterator[tuple[int, bytes]]:
        """Frames of one segment up to ``seg_end``; ``size`` is the active segment's
        length when replay began (None for a closed segment, which must end exactly
        after ``seg_end``)."""
        closed = size is None
        with open(seg.path, "rb", buffering=1 << 20) as f:
            if size is None:
                size = os.fstat(f.fileno()).st_size
            # Start at the last mark at or before the first wanted frame.
            k = min(max(after_seq + 1 - seg.first_seq, 0) // _MARK_EVERY, len(seg.marks) - 1)
            offset = seg.marks[k]
            f.seek(offset)
            expected = seg.first_seq + k * _MARK_EVERY
            due = _next_mark(seg)
            while expected <= seg_end:
                head = f.read(FRAME_HEADER_SIZE)
                if len(head) < FRAME_HEADER_SIZE:
                    raise CorruptWal(seg.path, offset, f"ends before seq {expected} (expected up to {seg_end})")
                length, crc, seq = _FRAME.unpack(head)
                if seq != expected:
                    raise CorruptWal(seg.path, offset, f"seq {seq} where {expected} was expected")
                if offset + FRAME_HEADER_SIZE + length > size:
                    raise CorruptWal(seg.path, offset, "frame runs past the end of the segment")
                if seq == due:
                    due = self._mark(seg, seq, offset)
                if seq <= after_seq:
                    f.seek(length, os.SEEK_CUR)
                else:
                    payload = f.read(length)
                    if len(payload) < length or crc != _frame_crc(length, seq, payload):
                        raise CorruptWal(seg.path, offset, f"checksum mismatch in seq {seq}")
                    yield seq, payload
                offset += FRAME_HEADER_SIZE + length
                expected += 1
            if closed and offset != size:
                raise CorruptWal(seg.path, offset, f"unexpected bytes after seq {seg_end}")

    def _mark(self, seg: _Segment, seq: int, offset: int) -> int:
        """Remembers that the frame of ``seq`` starts at ``offset`` if that is the
        next mark the segment lacks (marks grow in order, without holes; another
        replay may have added it meanwhile). Returns the seq of the next mark due:
        readers compare each frame's seq with it and call this only then, which
        keeps a full replay as fast as without marks."""
        with self._marking:
            if seq == _next_mark(seg):
                seg.marks.append(offset)
            return _next_mark(seg)

    # -- closing ------------------------------------------------------------

    def close(self) -> None:
        """fsyncs and closes; the log can be opened again from its directory."""
        if self._fd is None:
            return
        try:
            if self._broken is None and self._synced_seq < self.last_seq:
                os.fdatasync(self._fd)
                self._synced_seq = self.last_seq
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
