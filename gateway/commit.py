"""The git commit this Shoal was built from: ``GET /`` reports it as ``commit``.

Qdrant compiles its own commit id into the binary and answers it as 40 hex digits;
clients and dashboards show it, and some read it as such. Python has no build step
that sees the checkout every time, so the id is looked for, first found wins:

1. the ``.git`` of the source checkout the package runs from (an editable install,
   ``python -m gateway``), read as plain files (``HEAD``, the loose ref, else
   ``packed-refs``; a ``.git`` file of a worktree followed), so that no ``git``
   program is needed. It comes first: it is always current, where a file written
   for an earlier build may be stale;
2. ``gateway/COMMIT`` in the package: one line a packager writes before building a
   wheel or an image (``git rev-parse HEAD > gateway/COMMIT``), since an installed
   wheel carries no ``.git`` (nor does the image's build context);
   ``pyproject.toml`` ships the file;
3. else ``UNKNOWN``, 40 zeros: still the shape clients expect.

Anything that is not 40 hex digits (a damaged file, a SHA-256 repository) counts as
not found. Read once per process (``shoal_commit``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

UNKNOWN = "0" * 40
_PACKAGE = Path(__file__).resolve().parent
_SHA1 = re.compile(r"[0-9a-f]{40}")


def _valid(text: str | None) -> str | None:
    text = (text or "").strip().lower()
    return text if _SHA1.fullmatch(text) else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:  # absent, a folder, unreadable
        return None


def _git_dir(checkout: Path) -> Path | None:
    """The checkout's git folder: ``.git`` itself, or where a ``.git`` file
    (``gitdir: <path>``, as worktrees and submodules have) points."""
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    text = _read(dot_git)
    if text and text.startswith("gitdir:"):
        target = Path(text[len("gitdir:"):].strip())
        target = target if target.is_absolute() else checkout / target
        return target if target.is_dir() else None
    return None


def _resolve(git_dir: Path, ref: str) -> str | None:
    """The commit a ref names: its loose file, else its line in ``packed-refs``, looked
    up in the git folder and then in the common one a worktree shares."""
    if ".." in Path(ref).parts:
        return None
    common = _read(git_dir / "commondir")
    folders = [git_dir] + ([(git_dir / common.strip()).resolve()] if common else [])
    for folder in folders:
        found = _valid(_read(folder / ref))
        if found:
            return found
        for line in (_read(folder / "packed-refs") or "").splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref and _valid(sha):
                return _valid(sha)
    return None


def checkout_commit(checkout: Path) -> str | None:
    """The commit ``HEAD`` of the git checkout at ``checkout`` names, or None."""
    git_dir = _git_dir(checkout)
    head = _read(git_dir / "HEAD") if git_dir else None
    if not head:
        return None
    head = head.strip()
    if head.startswith("ref:"):
        return _resolve(git_dir, head[len("ref:"):].strip())
    return _valid(head)  # a detached HEAD holds the commit itself


def find_commit(package: Path = _PACKAGE) -> str:
    """The commit of the package at ``package`` (see the module's docstring), or UNKNOWN."""
    return checkout_commit(package.parent) or _valid(_read(package / "COMMIT")) or UNKNOWN


@functools.cache
def shoal_commit() -> str:
    """This process's Shoal commit, found once."""
    return find_commit()
