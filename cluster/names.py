"""Which collection and alias names Shoal accepts, and the ids that stand in for them.

A name comes from a request and is untrusted: it is a label in the metadata, never a
path, a process name or a Ray actor name. Those are built from the collection's
*incarnation*, a UUID the proposer draws for each create (:func:`new_incarnation`),
which :func:`is_incarnation` recognises before anything is built from it.

Names follow Qdrant's rule for new collections (``validate_collection_name`` with
``length(min = 1, max = 255)``, lib/common/common/src/validation.rs): none of
``< > : " / \\ | ? *`` and no NUL. Shoal refuses every other control character too,
and the names ``.`` and ``..``, which a URL cannot carry unchanged through every
client and proxy. Lengths count characters, as Rust's ``validator`` counts them.
"""

from __future__ import annotations

import re
import uuid

MAX_NAME_LENGTH = 255

# Qdrant's INVALID_CHARS, in its order: its message names the first of these found.
_QDRANT_FORBIDDEN = ("<", ">", ":", '"', "/", "\\", "|", "?", "*", "\0", "\x1f")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INCARNATION = re.compile(r"[0-9a-f]{32}")


def length_problem(name: str) -> str | None:
    """Qdrant's ``length(min = 1, max = 255)`` on a collection path, or None."""
    if 1 <= len(name) <= MAX_NAME_LENGTH:
        return None
    return f"must be from 1 to {MAX_NAME_LENGTH} characters"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new collection or alias (Qdrant's words), or None."""
    problem = length_problem(name)
    if problem is not None:
        return problem
    for char in _QDRANT_FORBIDDEN:
        if char in name:
            return f'collection name cannot contain "{char}" char'
    control = _CONTROL.search(name)
    if control is not None:
        return f'collection name cannot contain "{control.group()}" char'
    if name in (".", ".."):
        return f'collection name cannot be "{name}"'
    return None


def snapshot_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be the name of a snapshot file, or None. A snapshot
    name comes from a request (a path segment, a recover location): it must be
    one plain file name, never a path nor a hidden file, so that it can only
    ever name an entry of a snapshots folder. Qdrant answers a name that is not
    its own file name as a snapshot not found (``shard_snapshot_path_unchecked``),
    and so does Shoal for every name refused here."""
    problem = length_problem(name)
    if problem is not None:
        return problem
    if name.startswith("."):
        return "cannot start with a dot"
    for char in ("/", "\\"):
        if char in name:
            return f'cannot contain "{char}" char'
    control = _CONTROL.search(name)
    if control is not None:
        return f"cannot contain control character {control.group()!r}"
    return None


def new_incarnation() -> str:
    """A fresh id for one life of a collection: its files and actors are named by it."""
    return uuid.uuid4().hex


def is_incarnation(value: object) -> bool:
    """True for what :func:`new_incarnation` makes (32 lower-case hex digits) and
    nothing else, so that a value read back from metadata is safe in a path."""
    return isinstance(value, str) and _INCARNATION.fullmatch(value) is not None
