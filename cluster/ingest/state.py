"""What a load leaves on disk: the parts it finished, and the rows it rejected.

The progress file ``<state dir>/<incarnation>.parts.jsonl`` gets one line per part,
appended and fsynced only after every shard acknowledged the part's writes durably
(their logs fsynced). A later run of the same load skips the parts it lists; a part
a killed run had half written is simply written again (upserts of the same points
are idempotent). The file is named by the collection's incarnation: a collection
deleted and created again starts from nothing. A part is known by its file (path,
size, change time) and its row range, so a changed file is loaded again.

The reject file gets one JSON line per rejected row: ``{"source", "row", "reason"}``,
appended when the part is finished (a part written again after a kill may list its
rows twice).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cluster.names import is_incarnation


class State:
    def __init__(self, folder: Path, incarnation: str, rejects: Path):
        if not is_incarnation(incarnation):
            raise ValueError(f"not a collection incarnation: {incarnation!r}")
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{incarnation}.parts.jsonl"
        self.done: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.done[entry["part"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill: that part is written again
        rejects.parent.mkdir(parents=True, exist_ok=True)
        self._parts = open(self.path, "a")
        self._rejects = open(rejects, "a")

    @staticmethod
    def key(identity: str, start: int, stop: int) -> str:
        return f"{identity}|{start}-{stop}"

    def finished(self, key: str, source: str, loaded: int, rejects: list[tuple[int, str]]) -> None:
        for row, reason in rejects:
            self._rejects.write(json.dumps({"source": source, "row": row, "reason": reason}) + "\n")
        self._rejects.flush()
        self._parts.write(json.dumps({"part": key, "loaded": loaded, "rejected": len(rejects)}) + "\n")
        self._parts.flush()
        os.fsync(self._parts.fileno())
        self.done[key] = {"loaded": loaded, "rejected": len(rejects)}

    def close(self) -> None:
        self._parts.close()
        self._rejects.close()
