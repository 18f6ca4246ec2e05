"""How ``shoal ingest`` joins the private Ray instance of a ``shoal serve`` on this
machine (one started without ``--ray-address``).

That instance listens on 127.0.0.1 and takes only its own token
(``cluster.runtime``). The server writes both to ``ray-access.json`` in its storage
folder, readable by its user alone (the folder holds the data anyway), and removes
it when it stops; ``shoal ingest --storage`` reads it. With ``RAY_ADDRESS`` set
(a Ray cluster of one's own, or a job submitted with ``ray job submit``) the file
is not used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shard import fileio

FILE = "ray-access.json"


def publish(storage: Path, address: str, token: str) -> Path:
    """Write the instance's address and token into ``storage`` (made if missing)."""
    storage = Path(storage)
    storage.mkdir(parents=True, exist_ok=True)
    path = fileio.contained(storage, storage / FILE)
    temporary = path.with_name(FILE + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"address": address, "token": token, "pid": os.getpid()}, f)
    os.replace(temporary, path)
    return path


def withdraw(storage: Path) -> None:
    """Remove the file (the server stops), if it is this process's."""
    path = Path(storage) / FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def read(storage: Path) -> tuple[str, str] | None:
    """(address, token) a server on ``storage`` published, or None."""
    try:
        data = json.loads((Path(storage) / FILE).read_text())
        return data["address"], data["token"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
