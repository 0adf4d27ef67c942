"""Moving slots between shards, the supervisor's side: scale to N shards, move a range
to a shard, rebalance. (The shard's side: actors/shard/slots.py.)

Hazard: a customer must be served by exactly one shard at any moment, with all of their
state, whatever crashes when: the source, the destination or the supervisor itself.

Protocol. An operation runs in a background thread as a series of migrations of at
most `CHUNK` slots each (`placement.chunked`), one at a time. Each migration of
[lo, hi) from `src` to `dst`:

a. the map is saved with `Migration(id, lo, hi, src, dst, "frozen")` (same owners,
   epoch + 1) and sent to every shard: from here on a restarted `src` comes back with
   the range frozen (it answers SlotFrozen, the ingress waits and retries);
b. `freeze_slots` on src: the range is frozen there, and the answer is its state;
c. `absorb_slots` on dst: the state is stored, durably, but not served yet;
d. the map is saved with [lo, hi) owned by `dst` and the migration "flipped" (epoch +
   1), sent to every shard and published: dst serves the range, src answers SlotMoved;
e. `drop_slots` on src, then the map is saved without the migration (epoch + 1) and
   sent.

The saved map is the journal: `resume()` (at the supervisor's start, and before any new
operation) rolls a "frozen" migration back (drop_slots on dst, unfreeze_slots on src,
migration cleared) and finishes a "flipped" one (drop_slots on src, migration cleared).
A call that is refused or fails is retried with backoff for up to `retry_s` (a shard
restarting); then the operation fails, rolling the current migration back if it was
not flipped yet. Every shard call of the protocol is idempotent, so a retry, a resume or
a rollback after any crash is safe.

Scaling up starts the new shards first (they load the stored models, catalog and
context tables as they start, so they serve what the others serve before taking a
slot), then moves; scaling down moves first, then stops the shards left empty.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from actors.calls import refused
from actors.fleet import Fleet
from actors.messages import AbsorbSlots, DropSlots, FreezeSlots, SetSlotMap, UnfreezeSlots
from decisioning.errors import InvalidInput, MoveInProgress, UnknownShard
from decisioning.profile.placement import Transfer, balanced, chunked, transfers
from decisioning.profile.slots import SLOTS, Migration, SlotMap
from decisioning.stores.slotmap import SlotMapStore

__all__ = ["CHUNK", "MAX_SHARDS", "MoveFailed", "SlotMover"]

log = logging.getLogger("nextbest.slots")
CHUNK = 1024  # slots per migration: what customers wait on while it moves
MAX_SHARDS = 64


class MoveFailed(Exception):
    """A shard did not answer a step of a migration in time (or refused it)."""


class SlotMover:
    """Runs one slot operation at a time over `fleet`, journaling every step in `store`
    (the map saved there is the truth; `publish(map)` tells the supervisor's callers of
    a new owner or shard count). `fleet_lock` is held while the fleet grows or shrinks
    (the supervisor's deploy lock: a model or catalog change reaches every shard, the
    new ones too). `retry_s`, `clock` and `sleep` are for tests."""

    def __init__(
        self,
        store: SlotMapStore,
        fleet: Fleet,
        publish: Callable[[SlotMap], None] = lambda _: None,
        *,
        slot_map: SlotMap | None = None,
        fleet_lock: threading.Lock | None = None,
        retry_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store, self.fleet, self.publish = store, fleet, publish
        stored = slot_map or store.load()
        if stored is None:
            msg = f"no slot map stored at {store.path}: the supervisor saves one first"
            raise ValueError(msg)
        self.map = stored
        self.retry_s, self.clock, self.sleep = retry_s, clock, sleep
        self.fleet_lock = fleet_lock or threading.Lock()
        self.lock = threading.Lock()  # the map and the progress, read by status calls
        self.thread: threading.Thread | None = None
        self.progress: dict[str, Any] = _idle()
        self._started = 0.0

    # -- starting an operation (each answers its progress at once) -----------------------

    def scale(self, n: int) -> dict[str, Any]:
        """Run `n` shards, each with its balanced share of the slots."""
        if not 1 <= n <= MAX_SHARDS:
            raise InvalidInput(f"shards must be 1..{MAX_SHARDS}, not {n}", field="shards")
        with self.lock:
            self._check_idle()
            now = len(self.fleet)
            moves = chunked(transfers(self.map.owners, balanced(self.map.owners, n)), CHUNK)
            target = f"{n} shards"
            return self._start(f"scale {now}->{n}", target, moves, lambda: self._scale(n, moves))

    def move(self, lo: int, hi: int, to: int) -> dict[str, Any]:
        """Move slots [lo, hi) to shard `to` (a running shard)."""
        if not (0 <= lo < hi <= SLOTS):
            raise InvalidInput(
                f"slots [{lo}, {hi}) are not a range within 0..{SLOTS - 1} (lo < hi)",
                field="slots",
            )
        with self.lock:
            self._check_idle()
            if not 0 <= to < len(self.fleet):
                raise UnknownShard(
                    f"shard {to} is not running (shards 0..{len(self.fleet) - 1}); scale up first",
                    field="to",
                )
            target = list(self.map.owners)
            target[lo:hi] = [to] * (hi - lo)
            moves = chunked(transfers(self.map.owners, target), CHUNK)
            op, goal = f"move {lo}-{hi - 1} -> {to}", f"slots {lo}-{hi - 1} to {to}"
            return self._start(op, goal, moves, lambda: self._run(moves))

    def rebalance(self) -> dict[str, Any]:
        """Give every running shard its balanced share, moving as few slots as can be."""
        with self.lock:
            self._check_idle()
            n = len(self.fleet)
            moves = chunked(transfers(self.map.owners, balanced(self.map.owners, n)), CHUNK)
            return self._start("rebalance", f"{n} shards", moves, lambda: self._run(moves))

    def resume(self) -> None:
        """Finish or roll back the migration a stopped supervisor (or a failed operation)
        left in the stored map; logged, never raised (the supervisor starts anyway, and
        the next operation tries again)."""
        try:
            self._finish_pending()
        except Exception as e:  # noqa: BLE001 - a shard still down: the next operation retries
            log.error("slot map: the unfinished migration could not be settled: %s", e)
            with self.lock:
                self.progress = {**_idle(), "state": "failed", "error": f"resume: {e}"}

    # -- reading -------------------------------------------------------------------------

    def current(self) -> SlotMap:
        with self.lock:
            return self.map

    def status(self) -> dict[str, Any]:
        """The progress of the running (or the last) operation, as JSON-able values."""
        with self.lock:
            return self._measured()

    def running(self) -> bool:
        with self.lock:
            return self.progress["state"] == "running"

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The progress once the running operation is over (or at `timeout`)."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    # -- the operations ------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self.progress["state"] == "running":
            raise MoveInProgress(
                f"{self.progress['operation']} is running ({self.progress['slots_moved']} of "
                f"{self.progress['slots_total']} slots moved); wait for it to finish"
            )

    def _start(
        self, operation: str, target: str, moves: list[Transfer], body: Callable[[], None]
    ) -> dict[str, Any]:
        self._started = self.clock()
        self.progress = {
            **_idle(),
            "operation": operation,
            "state": "running",
            "target": target,
            "slots_total": sum(hi - lo for lo, hi, _, _ in moves),
        }
        self.thread = threading.Thread(
            target=self._operate, args=(operation, body), name="slot-mover", daemon=True
        )
        self.thread.start()
        return self._measured()

    def _operate(self, operation: str, body: Callable[[], None]) -> None:
        try:
            self._finish_pending()
            body()
        except Exception as e:  # noqa: BLE001 - reported as the operation's state
            log.error("slots: %s failed: %s", operation, e)
            with self.lock:
                self.progress.update(state="failed", error=str(e))
                self.progress.update(self._timing())
            return
        with self.lock:
            self.progress.update(state="done", eta_s=0.0)
            self.progress.update(self._timing())
        log.info("slots: %s done (map epoch %d)", operation, self.map.epoch)

    def _scale(self, n: int, moves: list[Transfer]) -> None:
        if n > len(self.fleet):  # new shards first: they load what is deployed
            with self.fleet_lock:
                self.fleet.grow(n)
            self._commit(replace(self.map, epoch=self.map.epoch + 1, shards=n), publish=True)
        self._run(moves)
        if n < len(self.fleet):  # then the empty ones go
            self._commit(replace(self.map, epoch=self.map.epoch + 1, shards=n), publish=True)
            with self.fleet_lock:
                self.fleet.shrink(n)

    def _run(self, moves: list[Transfer]) -> None:
        op = uuid.uuid4().hex[:8]
        for k, (lo, hi, src, dst) in enumerate(moves):
            profiles = self._migrate(Migration(f"{op}-{k}", lo, hi, src, dst))
            with self.lock:
                self.progress["slots_moved"] += hi - lo
                self.progress["profiles_moved"] += profiles

    def _migrate(self, mig: Migration) -> int:
        """Steps a-e of one migration; the profiles it moved."""
        if any(self.map.owners[s] != mig.src for s in range(mig.lo, mig.hi)):
            msg = f"slots [{mig.lo}, {mig.hi}) are not all on shard {mig.src} any more"
            raise MoveFailed(msg)
        try:
            self._commit(replace(self.map, epoch=self.map.epoch + 1, migration=mig))  # a
            freeze = FreezeSlots(mig.id, mig.lo, mig.hi)
            state = self._call(mig.src, "freeze_slots", freeze)  # b
            absorbed = int(self._call(mig.dst, "absorb_slots", AbsorbSlots(state)))  # c
        except MoveFailed as e:
            raise MoveFailed(f"{e}; {self._roll_back()}") from e
        owners = list(self.map.owners)
        owners[mig.lo : mig.hi] = [mig.dst] * (mig.hi - mig.lo)
        flipped = replace(mig, step="flipped")
        self._commit(  # d
            SlotMap(self.map.epoch + 1, tuple(owners), self.map.shards, flipped),
            required=(mig.src, mig.dst),
            publish=True,
        )
        self._finish(flipped)  # e
        return absorbed

    def _roll_back(self) -> str:
        """Roll the migration in the map back now if the shards let us; what happened."""
        try:
            self._finish_pending()
        except MoveFailed as e:
            log.error("slots: the migration could not be rolled back now: %s", e)
            return "the migration is rolled back at the next operation or supervisor start"
        return "the migration was rolled back"

    def _finish_pending(self) -> None:
        """Settle the migration the stored map names, if any (see the module docstring)."""
        mig = self.map.migration
        if mig is None:
            return
        if mig.step == "flipped":
            log.warning("slots: finishing migration %s (dropping its range on %d)", mig.id, mig.src)
            self._finish(mig)
            return
        log.warning("slots: rolling migration %s back (slots stay on shard %d)", mig.id, mig.src)
        self._call(mig.dst, "drop_slots", DropSlots(mig.id, mig.lo, mig.hi))
        self._call(mig.src, "unfreeze_slots", UnfreezeSlots(mig.id, mig.lo, mig.hi))
        # src restarted meanwhile comes back frozen (the stored map): this map thaws it
        cleared = replace(self.map, epoch=self.map.epoch + 1, migration=None)
        self._commit(cleared, required=(mig.src,))

    def _finish(self, mig: Migration) -> None:
        """Step e: the source forgets the range; the map forgets the migration. The
        source holds the flipped map first (else, thawed by the drop, it would serve
        the range again, empty)."""
        for shard in (mig.src, mig.dst):
            self._call(shard, "set_slot_map", SetSlotMap(self.map))
        self._call(mig.src, "drop_slots", DropSlots(mig.id, mig.lo, mig.hi))
        self._commit(replace(self.map, epoch=self.map.epoch + 1, migration=None))

    # -- the map and the calls -----------------------------------------------------------

    def _commit(
        self, slot_map: SlotMap, required: tuple[int, ...] = (), publish: bool = False
    ) -> None:
        """Save `slot_map` (from here on it is the truth), then send it to every shard:
        the `required` ones must take it (retried, else MoveFailed); another that does
        not answer now is logged (it loads the stored map when it restarts, and it owns
        none of the range). `publish` it when owners or the shard count changed."""
        self.store.save(slot_map)
        with self.lock:
            self.map = slot_map
        message = SetSlotMap(slot_map)
        for i in range(len(self.fleet)):
            if i in required:
                held = int(self._call(i, "set_slot_map", message))
                if held < slot_map.epoch:  # it ignored the map: never count it as taken
                    msg = f"shard {i} holds map epoch {held}, not {slot_map.epoch}"
                    raise MoveFailed(msg)
                continue
            try:
                answer = self.fleet.call_on(i, "set_slot_map", message)
            except Exception as e:  # noqa: BLE001 - it loads the stored map at restart
                answer = e
            if isinstance(answer, Exception):
                log.warning("slots: shard %d missed map epoch %d: %s", i, slot_map.epoch, answer)
        if publish:
            self.publish(slot_map)

    def _call(self, shard: int, method: str, message: Any) -> Any:
        """One call on one shard, retried with backoff while it is refused or fails
        (a shard restarting), for up to `retry_s`; then MoveFailed."""
        deadline = self.clock() + self.retry_s
        pause = 0.1
        while True:
            try:
                answer = self.fleet.call_on(shard, method, message)
            except Exception as e:  # noqa: BLE001 - restarting, gone, timed out: retried
                answer = e
            if not isinstance(answer, Exception) and not refused(answer):
                return answer
            if self.clock() >= deadline:
                msg = f"shard {shard} did not complete {method}: {answer}"
                raise MoveFailed(msg) from answer
            log.warning("slots: shard %d: %s failed (%s); retrying", shard, method, answer)
            self.sleep(pause)
            pause = min(pause * 2, 5.0)

    # -- progress ------------------------------------------------------------------------

    def _timing(self) -> dict[str, Any]:
        p = self.progress
        if p["operation"] is None:
            return {}
        elapsed = max(self.clock() - self._started, 0.0)
        moved, total = p["slots_moved"], p["slots_total"]
        eta = None
        if p["state"] == "running" and moved:
            eta = round(elapsed / moved * (total - moved), 1)
        rate = p["profiles_moved"] / elapsed if elapsed > 0 else 0.0
        return {"elapsed_s": round(elapsed, 3), "profiles_per_s": round(rate, 1), "eta_s": eta}

    def _measured(self) -> dict[str, Any]:
        if self.progress["state"] != "running":
            return dict(self.progress)
        return {**self.progress, **self._timing()}


def _idle() -> dict[str, Any]:
    return {
        "operation": None,
        "state": "idle",
        "target": None,
        "slots_total": 0,
        "slots_moved": 0,
        "profiles_moved": 0,
        "profiles_per_s": 0.0,
        "elapsed_s": 0.0,
        "eta_s": None,
        "error": None,
    }
