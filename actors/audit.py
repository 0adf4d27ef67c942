"""The identity audit log: every merge, once, as a JSON line under
`<data_dir>/audit/identity.jsonl` (fsynced); erasure rewrites it without the customer.

A merge may be finished by several callers (its requester, a retry, the sweep), so an
entry is written once per merge id: the ids already written are read from the file the
first time and remembered. One writer at a time (the supervisor actor, under a lock).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

__all__ = ["IdentityAudit"]


class IdentityAudit:
    """The audit log at `path` (JSON lines)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._written: set[str] | None = None  # merge ids in the file, read at first use

    def _rows(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def append(self, entry: dict[str, Any]) -> bool:
        """Write a merge's entry unless its merge id is in the log already."""
        with self.lock:
            if self._written is None:
                self._written = {str(r.get("merge_id")) for r in self._rows()}
            if entry["merge_id"] in self._written:
                return False
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self._written.add(entry["merge_id"])
            return True

    def entries(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._rows()
        if customer_id is None:
            return rows
        return [r for r in rows if customer_id in (r["survivor"], r["merged"])]

    def scrub(self, customer_id: str) -> int:
        """Erasure: the customer's entries out of the log (rewritten, renamed). Their
        merge ids stay remembered: a late finisher of an erased merge writes nothing."""
        with self.lock:
            if not os.path.exists(self.path):
                return 0
            with open(self.path) as f:
                rows = [line for line in f if line.strip()]
            keep = [
                line
                for line in rows
                if customer_id not in (json.loads(line)["survivor"], json.loads(line)["merged"])
            ]
            if len(keep) == len(rows):
                return 0
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(keep)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        return len(rows) - len(keep)
