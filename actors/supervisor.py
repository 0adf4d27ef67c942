"""The supervisor: the deployment's one coordinator over its fleet of shards.

It owns the slot -> shard map (stored: decisioning/stores/slotmap.py) and moves slots
between shards, scaling the fleet (actors/slots.py); runs changes of what every shard
serves one at a time (models, catalogs, context tables: actors/fleet.py), grants budget
shares from the durable ledger and keeps the identity audit log. A plain class:
`remote.py` makes it the `supervisor` actor over the shard actors; a test runs it over
in-process shards.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from actors.audit import IdentityAudit
from actors.calls import Refusal, error_answer
from actors.catalog import CatalogRollout
from actors.context_tables import ContextRollout
from actors.deployed import slot_store
from actors.fleet import Fleet
from actors.rollout import ModelRollout
from actors.slots import SlotMover
from decisioning.config import Config
from decisioning.errors import NextbestError
from decisioning.policy.budgets import budgets_of
from decisioning.profile.slots import SlotMap, ranges
from decisioning.stores.ledger import LedgerStore

__all__ = ["Supervisor"]

log = logging.getLogger("nextbest.actors")


class Supervisor:
    """Owns the slot map; rolls models, catalogs and context tables out to every shard;
    grants budgets; keeps the identity audit log. Each method is one remote call."""

    def __init__(self, config: Config, fleet: Fleet) -> None:
        """`fleet` runs the stored map's shards (`slot_store(config).initial(...)`, which
        the shards start with too); a migration the last supervisor left is settled."""
        self.config = config
        self.fleet = fleet
        store = slot_store(config)
        slot_map = store.initial(config.server.shards)
        if slot_map.shards != config.server.shards:
            log.warning(
                "supervisor: the stored slot map has %d shards, the config %d: the stored "
                "map rules (scale with the shards API)",
                slot_map.shards,
                config.server.shards,
            )
        self.deploying = threading.Lock()  # one change at a time; status stays answerable
        self.slots = SlotMover(
            store, fleet, self._published, slot_map=slot_map, fleet_lock=self.deploying
        )
        self.slots.resume()
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
        """Shard actor names (one per running shard), the slot -> shard map, its epoch."""
        slot_map = self.slots.current()
        names = [f"shard-{i}" for i in range(len(self.fleet))]
        return names, list(slot_map.owners), slot_map.epoch

    def status(self) -> list[dict[str, Any]]:
        return self.fleet.status()

    # -- slots and shards (actors/slots.py) ----------------------------------------------

    def shards(self) -> dict[str, Any]:
        """Every running shard: the slots it owns (inclusive ranges), its profiles, its
        node, whether it answers; and the slot operation running (or last run)."""
        slot_map = self.slots.current()
        runs: dict[int, list[list[int]]] = {}
        for lo, hi, shard in ranges(slot_map.owners):
            runs.setdefault(shard, []).append([lo, hi - 1])
        out = []
        for i, st in enumerate(self.fleet.status()):
            out.append(
                {
                    "shard": i,
                    "ranges": runs.get(i, []),
                    "slots": slot_map.count(i),
                    "profiles": st.get("profiles", st.get("customers")),
                    "node": self.fleet.node_of(i),
                    "ready": bool(st.get("ready", True)) and not st.get("fenced", False),
                }
            )
        progress = self.slots.status()
        moving = None if progress["state"] == "idle" else progress
        return {"epoch": slot_map.epoch, "shards": out, "moving": moving}

    def cluster_slots(self) -> dict[str, Any]:
        """GET /v1/cluster/slots: [first, last, shard] per slot range, each shard's own
        endpoint (None: it has none, or does not answer now), the epoch."""
        slot_map = self.slots.current()
        slots = [[lo, hi - 1, shard] for lo, hi, shard in ranges(slot_map.owners)]
        shards = [{"shard": i, "endpoint": e} for i, e in enumerate(self.fleet.endpoints())]
        return {"epoch": slot_map.epoch, "slots": slots, "shards": shards}

    def start_scale(self, n: int) -> dict[str, Any] | Refusal:
        """Run `n` shards (1..64), each with a balanced share of the slots: new shards
        start first, then slots move; removed shards stop once they own none. Answers
        the progress at once (the move runs in the background)."""
        return self._start(lambda: self.slots.scale(n))

    def start_move(self, lo: int, hi: int, to: int) -> dict[str, Any] | Refusal:
        """Move slots [lo, hi) to running shard `to`."""
        return self._start(lambda: self.slots.move(lo, hi, to))

    def start_rebalance(self) -> dict[str, Any] | Refusal:
        """Give every running shard its balanced share, moving as few slots as can be.
        (Nodes take care of themselves: shards are spread over nodes when they start,
        so balancing the slots balances the nodes' load.)"""
        return self._start(self.slots.rebalance)

    def move_progress(self) -> dict[str, Any]:
        return self.slots.status()

    def wait_for_move(self, timeout: float | None = None) -> dict[str, Any]:
        """The progress once the running operation is over (or at `timeout` seconds)."""
        return self.slots.wait(timeout)

    def _start(self, begin: Callable[[], dict[str, Any]]) -> dict[str, Any] | Refusal:
        try:
            return begin()
        except NextbestError as e:  # a bad request, or a move already running
            return error_answer(e)

    def _published(self, slot_map: SlotMap) -> None:
        """A new owner or shard count: routers fetch it (`layout`) when a shard answers
        SlotMoved, so nothing is pushed; logged for operators."""
        log.info(
            "slot map epoch %d: %s",
            slot_map.epoch,
            ", ".join(f"shard {i}: {slot_map.count(i)} slots" for i in range(slot_map.shards)),
        )

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
