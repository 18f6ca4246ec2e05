"""The files a load reads: their kind, their row count, and the rows of a batch.

- Parquet (``.parquet``, ``.pq``): a row's columns;
- JSON Lines (``.jsonl``, ``.ndjson``, ``.json``): one JSON object per line (an
  empty line is no row);
- ``.npy``: one vector per row, with the ids and payloads in a JSON Lines file
  beside it, line for line (``base.f16.npy`` or ``base.npy`` next to ``base.jsonl``);
  a three-dimensional one (points, rows, dim) holds a multivector per point, each of
  the same number of rows.

A row's id is its ``id`` field (``--id-column``), its vector its ``vector`` field
(``--vector-column``; the ``.npy`` row for ``.npy`` sources): a list of numbers (a
list of such lists for a multivector) or an object of named vectors. Its payload is
the ``--payload-columns`` if given, else its ``payload`` field if it has one, else
every other field.

Row numbers count from 0 in file order (for JSON Lines: the line, from 0), as the
reject file reports them. Ray Data reads the files (``cluster.runtime.read_batches``);
this module only turns a batch into rows, in the writer task that writes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

from cluster.ingest.rows import IN_BLOCK, Rejected

PARQUET = (".parquet", ".pq")
JSONL = (".jsonl", ".ndjson", ".json")


class SourceError(ValueError):
    """A source that cannot be read at all; the message says what to change."""


@dataclass(frozen=True)
class Columns:
    """How a row's fields map to a point (the command's column flags)."""

    id: str = "id"
    vector: str = "vector"
    payload: tuple[str, ...] | None = None
    hash_ids: bool = False


@dataclass(frozen=True)
class Source:
    """One file to load (``companion``: an ``.npy`` file's JSON Lines), with what
    identifies its content for the progress file (size and change time)."""

    path: str
    kind: str  # "parquet", "jsonl" or "npy"
    rows: int
    companion: str | None = None
    size: int = 0
    mtime_ns: int = 0

    @property
    def identity(self) -> str:
        return f"{self.path}|{self.size}|{self.mtime_ns}"


def _companion(path: Path) -> Path | None:
    name = path.name[: -len(".npy")]
    for stem in dict.fromkeys((name, name.split(".")[0])):
        for ext in JSONL:
            candidate = path.with_name(stem + ext)
            if candidate.is_file():
                return candidate
    return None


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def open_source(text: str) -> Source:
    """The source named ``text`` on the command line; SourceError saying what to
    change when it cannot be loaded."""
    path = Path(text).expanduser().absolute()
    if not path.exists():
        raise SourceError(f"ingestion source {text} does not exist: name an existing Parquet, JSON Lines or .npy file")
    if not path.is_file():
        raise SourceError(f"ingestion source {text} is not a file: name the Parquet, JSON Lines or .npy files in it")
    if not os.access(path, os.R_OK):
        raise SourceError(f"ingestion source {text} cannot be read: give this user read access to it")
    stat = path.stat()
    suffix = path.suffix.lower()
    if suffix in PARQUET:
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors vary: not Parquet
            raise SourceError(f"ingestion source {text} is not a Parquet file ({exc})") from None
        return Source(str(path), "parquet", rows, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if suffix in JSONL:
        return Source(str(path), "jsonl", _count_lines(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if suffix == ".npy":
        companion = _companion(path)
        if companion is None:
            raise SourceError(f"ingestion source {text} has no JSON Lines file of ids and payloads beside it: put "
                              f"{path.name[:-4].split('.')[0]}.jsonl (one line per vector) next to it")
        try:
            rows = int(np.load(path, mmap_mode="r").shape[0])
        except (ValueError, OSError) as exc:
            raise SourceError(f"ingestion source {text} is not a .npy file ({exc})") from None
        lines = _count_lines(companion)
        if lines != rows:
            raise SourceError(f"ingestion source {text} holds {rows} vectors but {companion.name} beside it "
                              f"{lines} lines: give one line per vector")
        return Source(str(path), "npy", rows, str(companion), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    raise SourceError(f"ingestion source {text}: unknown kind {suffix or '(no extension)'}; name .parquet, .jsonl "
                      "or .npy files")


# ------------------------------------------------------------ rows of a batch


def _payload_of(record: dict, columns: Columns, json_text: bool = False) -> Any:
    if columns.payload is not None:
        return {key: record[key] for key in columns.payload if key in record}
    if "payload" in record:
        value = record["payload"]
        if json_text and isinstance(value, str):  # Parquet has no JSON type: a payload column may be JSON text
            try:
                return json.loads(value)
            except ValueError:
                raise Rejected("the payload is text that is not JSON") from None
        return value
    return {k: v for k, v in record.items() if k not in (columns.id, columns.vector)}


def _line(text: str) -> dict | Rejected | None:
    if not text.strip():
        return None
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Rejected(f"the line is not valid JSON ({exc})")
    if not isinstance(record, dict):
        return Rejected("the line is not a JSON object")
    return record


def rows_of(kind: str, batch: Any, start: int, columns: Columns,
            vectors: np.ndarray | None = None) -> tuple[np.ndarray | None, Iterator[tuple]]:
    """The part's vector block (float32, a row per row of the batch) when its
    vectors are columnar, else None; and ``(row, id, vector, payload)`` for each row
    of a Ray Data batch that starts at row ``start``, or ``(row, Rejected)`` for one
    that cannot be read; a vector ``IN_BLOCK`` is that row of the block. For an
    ``.npy`` source ``batch`` is its companion's lines and ``vectors`` the arrays."""
    if kind == "parquet":
        return _parquet_rows(batch, start, columns)
    if vectors is not None and np.ndim(vectors) == 3:  # (n, rows, dim): a multivector per row
        return None, _text_rows(batch, start, columns, False, np.asarray(vectors))
    block = None if vectors is None else np.asarray(vectors).astype(np.float32, copy=False)
    return block, _text_rows(batch, start, columns, block is not None)


def _text_rows(batch: Any, start: int, columns: Columns, in_block: bool,
               per_row: np.ndarray | None = None) -> Iterator[tuple]:
    """The rows of JSON Lines text; with ``in_block`` each row's vector is its row of
    the part's block, with ``per_row`` it is ``per_row[i]`` (an .npy's multivector)."""
    from_npy = in_block or per_row is not None
    for i, text in enumerate(batch["text"]):
        record = _line(text)
        if record is None:
            if from_npy:
                yield start + i, Rejected("the line of ids and payloads is empty")
            continue
        if isinstance(record, Rejected):
            yield start + i, record
            continue
        try:
            body = _payload_of(record, columns)
        except Rejected as exc:
            yield start + i, exc
            continue
        vector = IN_BLOCK if in_block else per_row[i] if per_row is not None else record.get(columns.vector)
        yield start + i, record.get(columns.id), vector, body


def _parquet_rows(table, start: int, columns: Columns) -> tuple[np.ndarray | None, Iterator[tuple]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.column_names
    for needed in (columns.id, columns.vector):
        if needed not in names:
            raise SourceError(f"the Parquet file has no column {needed!r} (columns: {', '.join(names)}); "
                              "name it with --id-column / --vector-column")
    vector_column = table.column(columns.vector).combine_chunks()
    matrix = None
    if pa.types.is_list(vector_column.type) or pa.types.is_fixed_size_list(vector_column.type) \
            or pa.types.is_large_list(vector_column.type):
        lengths = pc.list_value_length(vector_column).to_numpy(zero_copy_only=False)
        if vector_column.null_count == 0 and len(lengths) and (lengths == lengths[0]).all():
            values = pc.list_flatten(vector_column)
            # Numbers: one vector a row. Lists of numbers (multivectors) go row by row.
            if values.null_count == 0 and (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
                matrix = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(lengths), -1)
    ids = table.column(columns.id).to_pylist()
    others = table.drop_columns([columns.vector]).to_pylist()
    vectors_list = None if matrix is not None else vector_column.to_pylist()

    def rows() -> Iterator[tuple]:
        for i, record in enumerate(others):
            try:
                body = _payload_of(record, columns, json_text=True)
            except Rejected as exc:
                yield start + i, exc
                continue
            yield start + i, ids[i], IN_BLOCK if matrix is not None else vectors_list[i], body

    return matrix, rows()
