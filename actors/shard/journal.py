"""A shard's journal: every change it applies is logged as a named record
(`decisioning/journal/records.py`) before it is acknowledged, and replayed at recovery
through one handler per record type: a dispatch table, filled by the shard's parts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from decisioning.journal.records import Record, decode, encode
from decisioning.journal.wal import Wal

__all__ = ["Handler", "Journal"]

log = logging.getLogger("nextbest.shard")
Handler = Callable[[Any], object]


class Journal:
    """Appends records to the WAL (none: a shard without a data directory logs nothing)
    and replays rows through the handler of their record type."""

    def __init__(self) -> None:
        self.wal: Wal | None = None  # set once recovery has replayed the old segments
        self.changed = False  # something was logged since the last snapshot started
        self.handlers: dict[type[Any], Handler] = {}
        self.unknown = 0  # rows of a tag this code does not know (a newer writer's)

    def log(self, record: Record) -> None:
        if self.wal is not None:
            self.wal.append(encode(record))
            self.changed = True

    def log_all(self, records: list[Record]) -> None:
        for record in records:
            self.log(record)

    def handle(self, handlers: Mapping[type[Any], Handler]) -> None:
        """Register the handlers that redo each record type at recovery."""
        self.handlers.update(handlers)

    def redo(self, row: list[Any]) -> None:
        """Apply one replayed WAL row (written under a named or a legacy tag)."""
        record = decode(row)
        if record is None:
            self.unknown += 1
            log.warning("WAL record of unknown kind %r skipped", row[0])
            return
        self.handlers[type(record)](record)
