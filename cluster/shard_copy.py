"""A shard's data carried between a gateway and a replica on any machine: what the
snapshots of a replicated collection use (``cluster.snapshots``).

A gateway cannot read a replica's folder (it is on the replica's node) nor write one,
so both directions go over the shard's authenticated connection (``cluster.wire``),
in chunks, as a replica transfer does (``cluster.transfer``):

- ``fetch``: the gateway takes a copy of an active replica: the replica exports its
  shard (the transfer's source side: ``transfer_open``, ``transfer_read``,
  ``transfer_close``) and the gateway writes the files into a folder of its own, the
  folder a snapshot packs.
- ``push``: the gateway hands a replica a snapshot's shard folder (``push_open``,
  ``push_write``, ``push_restore`` on ``ServedShard``): the replica receives it into a
  transfer folder of its own and swaps it in (``LocalShard.restore``: its graphs are
  rebuilt from the vectors, never read from the file).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from cluster.transfer import CHUNK_BYTES, EXPORT_LEASE, ExportInfo, close_quietly, fetch_files, time_left
from cluster.transport import HANDSHAKE_TIMEOUT, BlockingChannel, Endpoints

log = logging.getLogger(__name__)


def fetch(source: Endpoints, secret: bytes | None, folder: Path, timeout: float) -> ExportInfo:
    """A copy of the shard served at ``source`` in ``folder`` (made), within ``timeout`` s."""
    left = time_left(time.monotonic(), timeout, "the copy of the shard")
    channel = BlockingChannel.connect(source, secret, timeout=min(HANDSHAKE_TIMEOUT, left()))
    export: ExportInfo | None = None
    try:
        export = channel.call("transfer_open", EXPORT_LEASE, timeout=left())
        folder.mkdir(parents=True, exist_ok=True)
        fetch_files(channel, export, folder, left)
        return export
    finally:
        if export is not None:
            close_quietly(source, secret, export.export_id, channel)
        channel.close()


def push(target: Endpoints, secret: bytes | None, folder: Path, timeout: float) -> dict[str, Any]:
    """Hand the replica served at ``target`` the shard in ``folder`` (its files, no
    subfolders), which it restores; its answer (``{"seq", "points"}``)."""
    left = time_left(time.monotonic(), timeout, "the push of the shard")
    channel = BlockingChannel.connect(target, secret, timeout=min(HANDSHAKE_TIMEOUT, left()))
    push_id = None
    try:
        push_id = channel.call("push_open", timeout=left())
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            with open(path, "rb") as f:
                offset, data = 0, f.read(CHUNK_BYTES)
                while True:  # at least one write: an empty file is made too
                    channel.call("push_write", push_id, path.name, offset, data, timeout=left())
                    offset += len(data)
                    data = f.read(CHUNK_BYTES)
                    if not data:
                        break
        done = channel.call("push_restore", push_id, timeout=left())
        push_id = None
        return done
    finally:
        if push_id is not None:
            with contextlib.suppress(Exception):
                channel.call("push_abort", push_id, timeout=5)
        channel.close()
