"""Context tables on every shard: what each serves, and a new version pushed to all
(the supervisor's context concern), following actors/fleet.py.

A version is checked once here, stored only if every shard accepts it, and a shard that
restarts loads the stored current version.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from actors.calls import Refusal, error_answer
from actors.fleet import Fleet, stage_all
from decisioning.config import Config
from decisioning.errors import NextbestError, NotFound
from decisioning.policy.context import check_table, table_version
from decisioning.stores.context import ContextStore

__all__ = ["ContextRollout"]


class ContextRollout:
    """Pushes context tables over `fleet`; the caller runs one change at a time."""

    def __init__(self, config: Config, fleet: Fleet) -> None:
        self.config = config
        self.fleet = fleet

    def tables(self) -> dict[str, Any]:
        """Each configured table and the version every shard serves (null: not loaded)."""
        per_shard = self.fleet.ask("context_status")
        return {
            name: {
                "key": spec.key,
                "columns": dict(spec.columns),
                "shards": [st.get(name) for st in per_shard],
            }
            for name, spec in self.config.context_tables.items()
        }

    def put(self, name: str, table: pa.Table) -> dict[str, Any] | Refusal:
        """Check a table version, stage it on every shard, store it as current, then
        switch all. If any shard refuses, none switches and nothing is stored."""
        spec = self.config.context_tables.get(name)
        if spec is None:
            known = ", ".join(sorted(self.config.context_tables)) or "none configured"
            return error_answer(
                NotFound(f"unknown context table {name!r} (known: {known})", code="unknown_table")
            )
        try:
            checked = check_table(name, spec, table)
        except NextbestError as e:
            return error_answer(e)
        version = table_version(checked)
        stage = ("stage_context", (name, version, checked))
        _, refusal = stage_all(self.fleet, [stage], ("abort_context", (name,)))
        if refusal is not None:
            return refusal
        ContextStore(self.config.server.data_dir).save(name, checked, version)
        self.fleet.commit("commit_context", name)
        return {
            "table": name,
            "version": version,
            "rows": checked.num_rows,
            "shards": len(self.fleet),
        }
