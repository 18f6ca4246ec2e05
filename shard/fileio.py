"""Crash-safe file and directory writes.

A crash (kill -9, or a power cut once the writer has fsynced) at any instant must
leave either the old content or the new, never a mix and never nothing. For files
that is the usual dance: write a temporary file in the same directory, fsync it,
rename it over the target, fsync the directory (the rename itself lives in the
directory's data). Qdrant does the same with its ``atomic_save_json``.

For a directory (a shard snapshot is a directory of files) there is no atomic
"rename over a non-empty directory", so :func:`publish_dir` swaps through three
names that :func:`recover_dir` understands after a crash at any step
(:func:`replace_dir` runs the whole sequence around a writer callback):

    <name>.tmp/   being written; it holds COMPLETE_MARKER once fully written and fsynced
    <name>/       the published directory
    <name>.old/   the previous published directory, between the two renames

The published directory keeps the marker file; readers of it ignore that name.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

COMPLETE_MARKER = ".complete"
_MISSING = object()


def fsync_dir(path: str | os.PathLike) -> None:
    """Makes the entries of directory ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Creates ``path`` and missing parents, each creation made durable in its parent."""
    path = Path(path)
    missing = []
    cur = path
    while not cur.exists():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
        fsync_dir(d.parent)
    if not path.is_dir():
        raise NotADirectoryError(str(path))
    return path


class OutsideRoot(RuntimeError):
    """A path that should lie inside a root folder (a server's storage) does not."""


def contained(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` resolved (symbolic links and ``..`` followed), checked to lie strictly
    inside ``root`` resolved; OutsideRoot otherwise. Every path Shoal writes or
    deletes under its storage goes through this, so that no name from a request, no
    ``..`` and no planted link can turn a write or a delete onto other files."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target == base or base not in target.parents:
        raise OutsideRoot(f"refusing to touch {target}: it is not inside {base}")
    return target


def remove_tree(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Deletes the directory ``path`` with everything in it, only if it lies inside
    ``root`` (OutsideRoot, and nothing deleted, otherwise). False if it did not exist.
    ``shutil.rmtree`` removes links inside the tree without following them. What
    another deleter removes meanwhile is gone as wanted, not an error (a replica's
    actor and its collection's gateway may delete the same folder at once)."""
    if not os.path.lexists(path):
        return False
    target = contained(root, path)
    shutil.rmtree(target, onerror=_unless_gone)
    if os.path.lexists(target.parent):
        fsync_dir(target.parent)
    return True


def _unless_gone(function, path, exc_info) -> None:
    if not issubclass(exc_info[0], FileNotFoundError):
        raise exc_info[1]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Replaces the file ``path`` by ``data`` all at once, durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data).cast("B")
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically writes ``obj`` as JSON (orjson: u64 ints, unicode, numpy not allowed)."""
    atomic_write_bytes(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2))


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Atomically writes named arrays as one .npz file."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getbuffer())


def read_arrays(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an .npz file written by ``write_arrays`` (no pickles
    are read: KeyError for a missing one)."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in names}


def read_json(path: str | os.PathLike, default: Any = _MISSING) -> Any:
    """The JSON value in ``path``; ``default`` if given and the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default
    return orjson.loads(data)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsyncs every file and directory below ``root`` (``root`` included), bottom-up."""
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink():
                _fsync_file(p)
        fsync_dir(dirpath)


# ---------------------------------------------------------------------------
# Directory replacement.
# ---------------------------------------------------------------------------


def _names(final: Path) -> tuple[Path, Path]:
    return final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")


def staging_dir(final: str | os.PathLike) -> Path:
    """A fresh, empty ``<final>.tmp/`` to write the next version of ``final`` into
    (a stale one from an earlier crash is removed first)."""
    final = Path(final)
    tmp, _ = _names(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    ensure_dir(tmp)
    return tmp


def publish_dir(final: str | os.PathLike) -> None:
    """Makes the fully written ``<final>.tmp/`` the new ``final/``, durably.

    Order: mark tmp complete and fsync all of it; move the current ``final`` aside to
    ``.old``; rename tmp to ``final``; drop ``.old``. Each rename is fsynced in the
    parent before the next step, so :func:`recover_dir` always finds one whole version.
    """
    final = Path(final)
    tmp, old = _names(final)
    if not tmp.is_dir():
        raise FileNotFoundError(f"nothing staged at {tmp}")
    parent = final.parent
    with open(tmp / COMPLETE_MARKER, "wb"):
        pass
    fsync_tree(tmp)
    fsync_dir(parent)
    if old.exists():
        shutil.rmtree(old)
        fsync_dir(parent)
    if final.exists():
        os.rename(final, old)
        fsync_dir(parent)
    os.rename(tmp, final)
    fsync_dir(parent)
    if old.exists():
        shutil.rmtree(old)
        fsync_dir(parent)


def recover_dir(final: str | os.PathLike) -> Path | None:
    """Finishes or undoes a :func:`publish_dir` that a crash interrupted; returns
    ``final`` as a Path when it exists afterwards, else None. Call it before reading
    ``final``.

    - ``final`` exists: it is whole (it only ever appears by rename of a complete
      tmp, or is the untouched previous version); leftovers are removed.
    - ``final`` missing, tmp complete: the crash fell between the renames; roll forward.
    - ``final`` missing, ``.old`` present: roll back to the previous version.
    """
    final = Path(final)
    tmp, old = _names(final)
    parent = final.parent
    changed = False
    if not final.exists():
        if tmp.is_dir() and (tmp / COMPLETE_MARKER).exists():
            os.rename(tmp, final)
            changed = True
        elif old.is_dir():
            os.rename(old, final)
            changed = True
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
            changed = True
    if changed:
        fsync_dir(parent)
    return final if final.is_dir() else None


def replace_dir(final: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Replaces directory ``final`` by what ``write(tmp)`` puts in an empty staging
    directory, crash-safely (:func:`staging_dir`, then :func:`publish_dir`). If
    ``write`` raises, the staging directory is removed and ``final`` is untouched."""
    final = Path(final)
    tmp = staging_dir(final)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(final)
