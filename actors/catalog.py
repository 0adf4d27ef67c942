"""The catalog every shard serves: read it, apply a new one or roll back to the one
before (the supervisor's catalog concern), following actors/fleet.py.

What is stored is the catalog as served (merged with the settings it does not give), so
a restarted shard serves exactly what the others do.
"""

from __future__ import annotations

from typing import Any

from actors.calls import Refusal, error_answer
from actors.fleet import Fleet, stage_all
from decisioning.config import Config
from decisioning.errors import NextbestError
from decisioning.stores.catalogs import CatalogStore, catalog_of, version_of, with_catalog

__all__ = ["CatalogRollout"]


class CatalogRollout:
    """Applies catalogs over `fleet`; the caller runs one change at a time."""

    def __init__(self, config: Config, fleet: Fleet) -> None:
        self.config = config
        self.fleet = fleet

    def current(self) -> dict[str, Any]:
        """The catalog the shards serve: its version and sections."""
        current = CatalogStore(self.config.server.data_dir).current()
        if current is not None:
            return {"version": current[0], **current[1]}
        return {"version": version_of(self.config), **catalog_of(self.config)}

    def serving_config(self) -> Config:
        """The config as the shards serve it: the file's, with the current catalog."""
        current = CatalogStore(self.config.server.data_dir).current()
        return self.config if current is None else with_catalog(self.config, current[1])

    def apply(self, catalog: dict[str, Any] | None) -> dict[str, Any] | Refusal:
        """Stage `catalog` (None: the one before the current) on every shard, store it as
        current, then switch all. If any shard refuses, none switches and nothing is
        stored; the same catalog again changes nothing."""
        store = CatalogStore(self.config.server.data_dir)
        serving = self.serving_config()
        base = self.current()
        rollback = catalog is None
        try:
            if catalog is None:
                _, catalog = store.previous()
            full = catalog_of(with_catalog(serving, catalog))  # checked once, here
        except NextbestError as e:
            return error_answer(e)
        staged, refusal = stage_all(self.fleet, [("stage_catalog", (full,))], ("abort_catalog", ()))
        if refusal is not None:
            return refusal
        version = staged[0]
        base_version = base.pop("version")
        if version == base_version:
            self.fleet.abort("abort_catalog")
            return {"version": version, "changed": False, "shards": len(self.fleet)}
        store.remember(base_version, base)
        if rollback:
            store.rolled_back(version)
        else:
            store.save(version, full, base_version)
        self.fleet.commit("commit_catalog")  # a shard restarting now loads it
        return {
            "version": version,
            "changed": True,
            "rolled_back": rollback,
            "shards": len(self.fleet),
        }
