"""Catalog versions under the data dir, and the catalog sections of a running config.

    <data_dir>/catalogs/<version>.json    {"actions": [...], "decisioning": {...}}, immutable
    <data_dir>/catalogs/current.json      {"version": v, "previous": [older versions]}

A catalog is what may change while the server runs: the actions and the decisioning
settings (levers, weights, consent, do nothing, exploration). Channels, the profile
schema and the server settings need a restart. The version is the catalog's content
hash, so applying the same catalog twice is one version.
"""

from __future__ import annotations

import json
import os
from typing import Any

from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import ConfigError, NotFound
from decisioning.policy.catalog import Catalog
from decisioning.profile import ProfileSchema
from decisioning.stores.fs import filesystem

__all__ = ["CATALOG_KEYS", "CatalogStore", "catalog_of", "serving_config", "with_catalog"]

CATALOG_KEYS = ("actions", "decisioning", "triggers")
KEEP = 20  # earlier versions kept for rollback


def catalog_of(config: Config) -> dict[str, Any]:
    """The catalog sections of `config`, as plain data."""
    dumped = config.model_dump(mode="json")
    return {k: dumped[k] for k in CATALOG_KEYS}


def with_catalog(config: Config, catalog: Any, source: str = "catalog") -> Config:
    """`config` with its catalog replaced; checked and compiled like a config file
    (ConfigError names each problem, rules with line and column)."""
    if not isinstance(catalog, dict) or not catalog.get("actions"):
        raise ConfigError(
            source, [("(top level)", "a catalog holds 'actions' (and 'decisioning')")]
        )
    stray = sorted(set(catalog) - set(CATALOG_KEYS))
    if stray:
        raise ConfigError(
            source,
            [
                (
                    k,
                    "not part of a catalog (only actions, decisioning and triggers change "
                    "at runtime)",
                )
                for k in stray
            ],
        )
    data = {**config.model_dump(mode="json"), **catalog}
    if "decisioning" not in catalog:
        data["decisioning"] = config.decisioning.model_dump(mode="json")
    return config_from_dict(data, source)


def version_of(config: Config) -> str:
    return Catalog(config, ProfileSchema(config)).version


class CatalogStore:
    """Applied catalogs and which one is current, on a pyarrow filesystem."""

    def __init__(self, data_dir: str) -> None:
        self.fs, root = filesystem(data_dir)
        self.root = root + "/catalogs"

    def _read(self, name: str) -> Any:
        with self.fs.open_input_stream(f"{self.root}/{name}") as f:
            return json.loads(f.read().decode())

    def _write(self, name: str, value: Any) -> None:
        self.fs.create_dir(self.root, recursive=True)
        tmp = f"{self.root}/.{name}.{os.getpid()}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(value, indent=2, sort_keys=True).encode())
        self.fs.move(tmp, f"{self.root}/{name}")

    def _pointer(self) -> dict[str, Any] | None:
        try:
            return dict(self._read("current.json"))
        except FileNotFoundError:
            return None

    def current(self) -> tuple[str, dict[str, Any]] | None:
        """The current catalog (version, sections), or None: the config file's own."""
        p = self._pointer()
        return None if p is None else (p["version"], self._read(f"{p['version']}.json"))

    def save(self, version: str, catalog: dict[str, Any], base: str | None) -> None:
        """Store `catalog` and make it current; `base` (the one it replaces) can be
        rolled back to."""
        self._write(f"{version}.json", catalog)
        previous = list((self._pointer() or {}).get("previous", []))
        if base is not None and base != version:
            previous = [*previous, base][-KEEP:]
        self._write("current.json", {"version": version, "previous": previous})

    def remember(self, version: str, catalog: dict[str, Any]) -> None:
        """Keep a catalog (the config file's, before the first apply) for rollback."""
        self._write(f"{version}.json", catalog)

    def previous(self) -> tuple[str, dict[str, Any]]:
        """The catalog before the current one."""
        p = self._pointer()
        if not p or not p.get("previous"):
            raise NotFound("there is no earlier catalog to roll back to", code="no_previous")
        version = p["previous"][-1]
        return version, self._read(f"{version}.json")

    def rolled_back(self, version: str) -> None:
        p = self._pointer() or {"previous": []}
        self._write("current.json", {"version": version, "previous": p["previous"][:-1]})


def serving_config(config: Config) -> Config:
    """`config` with the catalog applied at runtime (if any): what the shards serve, so
    training and registering use the same actions and vocabularies."""
    current = CatalogStore(config.server.data_dir).current()
    return config if current is None else with_catalog(config, current[1], f"catalog {current[0]}")
