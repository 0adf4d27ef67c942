"""What a shard (re)starts with besides its own state: the deployed models, the current
catalog and context tables as the supervisor stored them, and where its state lives.

Whatever was changed at runtime survives restarts this way. A stored part the shard
refuses is logged and left out: the shard starts without it rather than fail its start
(Ray would restart it in a loop); its status shows what it refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pyarrow as pa

from actors.shard import Shard
from decisioning.config import Config
from decisioning.errors import ModelError, NextbestError
from decisioning.policy.scoring import ModelBundle, native_tag
from decisioning.profile.slots import SlotMap
from decisioning.stores.catalogs import CatalogStore, with_catalog
from decisioning.stores.context import ContextStore
from decisioning.stores.registry import Registry
from decisioning.stores.slotmap import SlotMapStore

__all__ = [
    "Deployed",
    "install_tables",
    "load_deployed",
    "load_slot_map",
    "shard_dir",
    "slot_store",
]

log = logging.getLogger("nextbest.actors")


@dataclass(frozen=True)
class Deployed:
    """What the supervisor stored for every shard to serve."""

    config: Config  # with the current catalog
    bundles: list[ModelBundle]  # champions
    challengers: list[tuple[ModelBundle, float, bool]]  # bundle, share, shadow
    tables: list[tuple[str, str, pa.Table]]  # name, version, rows


def load_deployed(shard_id: int, config: Config) -> Deployed:
    """Read the deployed models, the current catalog and context tables."""
    registry = Registry(config.server.data_dir)
    tag = native_tag() if config.server.scorer == "native" else None
    bundles, challengers = [], []
    for name in registry.names():
        try:
            aliases = registry.aliases(name)
            if aliases.champion is not None:
                bundles.append(registry.read(name, aliases.champion, tag))
            if aliases.challenger is not None:
                bundle = registry.read(name, aliases.challenger, tag)
                challengers.append((bundle, aliases.share, aliases.shadow))
        except ModelError as e:
            log.error("shard %d: deployed model %s refused at start: %s", shard_id, name, e)
    current = CatalogStore(config.server.data_dir).current()
    if current is not None:  # applied at runtime: it survives restarts
        try:
            config = with_catalog(config, current[1], f"catalog {current[0]}")
        except NextbestError as e:
            log.error("shard %d: the current catalog is refused, using the file's: %s", shard_id, e)
    tables = []
    store = ContextStore(config.server.data_dir)
    for name, version in store.current().items():  # pushed at runtime: kept across restarts
        if name in config.context_tables:
            try:
                tables.append((name, version, store.load(name, version)))
            except (OSError, NextbestError) as e:
                log.error("shard %d: context table %s not loaded: %s", shard_id, name, e)
    return Deployed(config, bundles, challengers, tables)


def install_tables(shard: Shard, tables: list[tuple[str, str, pa.Table]]) -> None:
    """Serve the stored context tables on a shard that just started."""
    for name, version, table in tables:
        try:
            shard.stage_context(name, version, table)
            shard.commit_context(name)
        except NextbestError as e:
            log.error("shard %d: context table %s refused: %s", shard.shard_id, name, e)


def shard_dir(config: Config, shard_id: int) -> str | None:
    """Where a shard keeps its WAL and snapshots (None: `durable: false`); the config
    has checked that it is a POSIX path."""
    s = config.server
    if not s.durable:
        return None
    if s.state_dir is not None:
        return os.path.join(s.state_dir.removeprefix("file://"), str(shard_id))
    return os.path.join(s.data_dir.removeprefix("file://"), "shards", str(shard_id))


def slot_store(config: Config) -> SlotMapStore:
    """The deployment's slot map store (decisioning/stores/slotmap.py); the shard
    directories it looks at for a data dir written before slot maps are `shard_dir`'s."""
    s = config.server
    root = None if s.state_dir is None else s.state_dir.removeprefix("file://")
    return SlotMapStore.at(s.data_dir, root)


def load_slot_map(config: Config) -> SlotMap:
    """The stored slot map a shard starts with (the supervisor stores one before it
    starts any shard; without one, the contiguous map over the configured count)."""
    return slot_store(config).load() or SlotMap.contiguous(config.server.shards)
