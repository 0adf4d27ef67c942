"""The supervisor: the deployment's one coordinator over its fleet of shards.

It owns the slot -> shard map, runs changes of what every shard serves one at a time
(models, catalogs, context tables: actors/fleet.py), grants budget shares from the
durable ledger and keeps the identity audit log. A plain class: `remote.py` makes it
the `supervisor` actor over the shard actors; a test runs it over in-process shards.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pyarrow as pa

from actors.audit import IdentityAudit
from actors.calls import Refusal
from actors.catalog import CatalogRollout
from actors.context_tables import ContextRollout
from actors.fleet import Fleet
from actors.rollout import ModelRollout
from decisioning.config import Config
from decisioning.policy.budgets import budgets_of
from decisioning.profile.slots import contiguous_map
from decisioning.stores.ledger import LedgerStore

__all__ = ["Supervisor"]


class Supervisor:
    """Owns the slot map; rolls models, catalogs and context tables out to every shard;
    grants budgets; keeps the identity audit log. Each method is one remote call."""

    def __init__(self, config: Config, fleet: Fleet) -> None:
        self.config = config
        self.fleet = fleet
        self.slot_map = contiguous_map(config.server.shards)
        self.deploying = threading.Lock()  # one change at a time; status stays answerable
        self.leasing = threading.Lock()  # budget grants, one at a time
        self.models = ModelRollout(config, fleet)
        self.catalogs = CatalogRollout(config, fleet)
        self.contexts = ContextRollout(config, fleet)
        self.ledger = LedgerStore.at(config.server.data_dir)
        root = config.server.data_dir.removeprefix("file://")
        self.audit = IdentityAudit(os.path.join(root, "audit", "identity.jsonl"))

    def ready(self) -> bool:
        return True

    def layout(self) -> tuple[list[str], list[int], int]:
        """Shard actor names, the slot -> shard map and its epoch."""
        return [f"shard-{i}" for i in range(len(self.fleet))], self.slot_map, 1

    def status(self) -> list[dict[str, Any]]:
        return self.fleet.status()

    # -- models (actors/rollout.py) ------------------------------------------------------

    def deploy_model(self, manifest: dict[str, Any], model_text: str) -> dict[str, Any] | Refusal:
        """Stage a model on every shard; only if all accept it, register and serve it."""
        with self.deploying:
            return self.models.deploy(manifest, model_text)

    def roll_out(
        self,
        name: str,
        op: str,
        version: int | None = None,
        share: float = 0.0,
        shadow: bool = False,
    ) -> dict[str, Any] | Refusal:
        """promote, rollback or split `name`'s versions on every shard, or on none."""
        with self.deploying:
            return self.models.roll_out(name, op, version, share, shadow)

    def model_stats(self) -> dict[str, Any]:
        """Per model version: its alias, decisions and outcomes, over every shard."""
        return self.models.stats(self.status())

    # -- catalog (actors/catalog.py) -----------------------------------------------------

    def catalog(self) -> dict[str, Any]:
        """The catalog the shards serve: its version and sections."""
        return self.catalogs.current()

    def apply_catalog(self, catalog: dict[str, Any] | None) -> dict[str, Any] | Refusal:
        """Serve `catalog` (None: the one before) on every shard, or on none."""
        with self.deploying:
            return self.catalogs.apply(catalog)

    # -- context tables (actors/context_tables.py) ---------------------------------------

    def context_tables(self) -> dict[str, Any]:
        """Each configured table and the version every shard serves (null: not loaded)."""
        return self.contexts.tables()

    def put_context(self, name: str, table: pa.Table) -> dict[str, Any] | Refusal:
        """Serve a new version of a context table on every shard, or on none."""
        with self.deploying:
            return self.contexts.put(name, table)

    # -- budgets (decisioning/stores/ledger.py) ------------------------------------------

    def lease(self, action_id: str, day: str, want: int) -> int:
        """Grant a shard up to `want` more of `day`'s budget of `action_id` (0 when it
        is granted out, the day is forgotten, or the action has no budget); the grant is
        durable before it is answered."""
        with self.leasing:
            budget = budgets_of(self.catalogs.serving_config()).get(action_id)
            if budget is None:
                return 0
            return self.ledger.grant(action_id, day, want, budget)

    # -- identity audit log (actors/audit.py) --------------------------------------------

    def audit_identity(self, entry: dict[str, Any]) -> bool:
        """Append a merge to the identity audit log, once per merge id."""
        return self.audit.append(entry)

    def identity_audit(self, customer_id: str | None = None) -> list[dict[str, Any]]:
        return self.audit.entries(customer_id)

    def scrub_identity_audit(self, customer_id: str) -> int:
        """Erasure: the customer's entries out of the audit log."""
        return self.audit.scrub(customer_id)
