"""The driver of ``shoal ingest``: plan, read, hand parts to writer tasks, report.

It checks the sources, asks the server for the collection's layout
(``cluster.ingest.layout``), joins Ray (``RAY_ADDRESS``, else the private instance
of the server whose ``--storage`` it is given: ``cluster.ingest.access``), then reads
each file with Ray Data in batches of ``part_rows`` rows, in file order. Each batch
is a *part* (file x row range); a part the progress file lists is skipped
(``cluster.ingest.state``), the others are written by Ray tasks
(``cluster.ingest.writer``), at most ``parallelism`` at a time, and recorded once
written. Progress goes to stderr about once a second, the summary to stdout.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cluster import runtime
from cluster.ingest import access, layout as layouts
from cluster.ingest.sources import Columns, Source, SourceError, open_source
from cluster.ingest.state import State
from cluster.ingest.writer import write_part

PROGRESS_EVERY = 1.0  # seconds between two progress lines


class IngestError(RuntimeError):
    """The load cannot start or go on; the message says what to change."""


@dataclass(frozen=True)
class Options:
    collection: str
    sources: tuple[str, ...]
    url: str = "http://localhost:6333"
    api_key: str | None = None
    storage: Path = Path("./shoal_storage")
    rejects: Path | None = None
    state_dir: Path | None = None
    max_rejects: int = 0
    part_rows: int = 5000
    parallelism: int = 4
    columns: Columns = Columns()


@dataclass
class Summary:
    loaded: int = 0
    rejected: int = 0
    skipped_parts: int = 0
    skipped_points: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"loaded {self.loaded} points, rejected {self.rejected} rows, skipped {self.skipped_parts} parts "
                f"({self.skipped_points} points) finished by an earlier run, in {self.seconds:.1f} s")


class Progress:
    """One line on ``out`` about once a second: points done, rate, ETA."""

    def __init__(self, total: int, out: TextIO):
        self.total, self.out = total, out
        self.started = self.last = time.monotonic()
        self.done = 0  # rows of parts finished or skipped
        self.written = 0  # rows of parts written by this run (the rate counts these)

    def advance(self, rows: int, written: bool) -> None:
        self.done += rows
        self.written += rows if written else 0
        self.show()

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        rate = self.written / max(now - self.started, 1e-9)
        left = self.total - self.done
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        share = 100.0 * self.done / self.total if self.total else 100.0
        self.out.write(f"ingest: {self.done}/{self.total} rows ({share:.0f}%), {rate:,.0f} points/s, ETA {eta}\n")
        self.out.flush()


def _join_ray(options: Options) -> None:
    address = os.environ.get("RAY_ADDRESS")
    if address:
        runtime.start(address)
        return
    found = access.read(options.storage)
    if found is None:
        raise IngestError(f"no Ray to join: set RAY_ADDRESS, or name the storage folder of a `shoal serve` running "
                          f"on this machine with --storage (none at {options.storage})")
    try:
        runtime.join_private(*found)
    except runtime.RayUnreachable:
        raise IngestError(f"the Ray instance of the server on {options.storage} does not answer: is that "
                          "`shoal serve` still running?") from None


def run(options: Options, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Carry out the load; the exit status (0, or 1 when more than
    ``max_rejects`` rows were rejected). SourceError, LayoutError and IngestError
    when it cannot start."""
    sources = [open_source(s) for s in options.sources]
    started = time.monotonic()
    layout = layouts.fetch(options.url, options.collection, options.api_key)
    rejects = options.rejects or Path(f"ingest-{options.collection}.rejects.jsonl")
    state = State(options.state_dir or rejects.absolute().parent / ".shoal-ingest", layout["incarnation"], rejects)
    _join_ray(options)
    runtime.quiet_ray_data()
    summary = Summary()
    progress = Progress(sum(s.rows for s in sources), err)
    task = runtime.task(write_part)
    layout_ref = runtime.put(layout)
    pending: dict[Any, tuple[str, Source, int]] = {}

    def settle(timeout: float | None) -> None:
        done, _ = runtime.finished(list(pending), timeout)
        for ref in done:
            key, source, rows = pending.pop(ref)
            result = runtime.result(ref)
            state.finished(key, source.path, result.loaded, result.rejects)
            summary.loaded += result.loaded
            summary.rejected += len(result.rejects)
            progress.advance(rows, True)

    try:
        for source in sources:
            for key, start, batch, vectors, rows in _parts(source, options.part_rows):
                entry = state.done.get(key)
                if entry is not None:
                    summary.skipped_parts += 1
                    summary.skipped_points += entry["loaded"]
                    summary.rejected += entry["rejected"]
                    progress.advance(rows, False)
                    continue
                while len(pending) >= options.parallelism:
                    settle(PROGRESS_EVERY)
                    progress.show()
                ref = runtime.submit(task, layout_ref, "parquet" if source.kind == "parquet" else "text", batch,
                                     start, options.columns, vectors)
                pending[ref] = (key, source, rows)
        while pending:
            settle(PROGRESS_EVERY)
            progress.show()
    finally:
        state.close()
    progress.show(force=True)
    summary.seconds = time.monotonic() - started
    out.write(summary.line() + "\n")
    if summary.rejected:
        out.write(f"rejected rows are listed in {rejects}\n")
    if summary.rejected > options.max_rejects:
        err.write(f"shoal ingest: {summary.rejected} rows rejected, more than --max-rejects {options.max_rejects}\n")
        return 1
    return 0


def _parts(source: Source, part_rows: int):
    """(key, first row, batch, vectors, rows) for each part of ``source``, read with Ray Data."""
    if source.kind == "npy":
        lines = runtime.read_batches("text", source.companion, part_rows)
        arrays = runtime.read_batches("numpy", source.path, part_rows)
        batches = zip(lines, arrays)
    else:
        batches = ((b, None) for b in runtime.read_batches("parquet" if source.kind == "parquet" else "text",
                                                           source.path, part_rows))
    start = 0
    for batch, vectors in batches:
        rows = batch.num_rows if source.kind == "parquet" else len(batch["text"])
        if vectors is not None and len(vectors["data"]) != rows:
            raise SourceError(f"{source.path}: the vectors and the lines beside them do not line up at row {start}")
        yield State.key(source.identity, start, start + rows), start, batch, vectors, rows
        start += rows
