"""The migration protocol as a property: random events (with ids, and their retries),
decisions (with request ids, and their retries) and trigger timers, interleaved with
slot moves that the supervisor may die in at any step (before or after a shard applied
the step), with the shards restarted from their WALs or not. A retried request id always
gets the answer it was first given. Afterwards every customer, read at the shard the
stored map names, equals a single shard fed the same acknowledged input; no other shard
holds anything of them, and no idempotency key or remembered answer sits on two shards.

Real `Shard`s with WALs on disk, the real `SlotMover` and `SlotMapStore`; a crash is a
BaseException thrown into the mover's thread, as a process death stops it mid-step."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from actors import messages as m
from actors.calls import run_calls
from actors.fleet import LocalFleet
from actors.shard import Shard
from actors.slots import SlotMover
from decisioning.errors import SlotFrozen, SlotMoved
from decisioning.profile.slots import SLOTS, SlotMap, slot_of
from decisioning.stores.slotmap import SlotMapStore
from serving.bodies import decision_body
from tests.conftest import examples
from tests.unit import edge
from tests.unit.actors.shard.test_shard_journal import CONFIG, ev
from tests.unit.decisioning.policy.test_decide import NOW, Clock

CUSTOMERS = [f"p{i}" for i in range(24)]
SHARDS = 3
KINDS = ("page_view", "purchase", "cart_add", "address_change", "profile_update")


class Crash(BaseException):  # noqa: N818 - not an error: the supervisor process dies
    """The supervisor dies here (not an Exception: nothing in the mover catches it)."""


class Countdown:
    """Lets `n` protocol actions (shard calls, map saves) happen, then crashes: before
    the next one reaches its target, or just after it did (its answer lost)."""

    def __init__(self, n: int | None, after: bool) -> None:
        self.n, self.after = n, after

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any) -> Any:
            if self.n is not None and self.n <= 0 and not self.after:
                raise Crash
            answer = fn(*args)
            if self.n is not None:
                self.n -= 1
                if self.n < 0:
                    raise Crash
            return answer

        return step


class World:
    """Three durable shards, the stored slot map, a mover; and the reference shard."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = Clock()
        self.reference = Shard(0, CONFIG, clock=self.clock)
        self.store = SlotMapStore.at(str(root / "data"))
        self.store.save(SlotMap.contiguous(SHARDS))
        self.shards = [self._open(i) for i in range(SHARDS)]
        self.acked: list[dict[str, Any]] = []  # events acknowledged, for retries
        self.answered: dict[tuple[str, str], dict[str, Any]] = {}  # request id -> answer

    def _open(self, i: int) -> Shard:
        slot_map = self.store.load()
        log_dir = str(self.root / f"shard-{i}")
        return Shard(i, CONFIG, clock=self.clock, log_dir=log_dir, slot_map=slot_map)

    def owner(self, customer: str) -> Shard:
        slot_map = self.store.load()
        assert slot_map is not None
        return self.shards[slot_map.owners[slot_of(customer)]]

    # -- what clients do: the answer is acknowledged unless the shard refused the slot --

    def events(self, wires: list[dict[str, Any]]) -> None:
        parts: dict[int, list[dict[str, Any]]] = {}
        for w in wires:  # grouped by owner, as the ingress does
            parts.setdefault(self.owner(w["customer_id"]).shard_id, []).append(w)
        for shard, part in parts.items():
            msg = edge.events(part)
            answer = run_calls(self.shards[shard], [("apply_events", (msg,))])[0]
            if isinstance(answer, SlotMoved | SlotFrozen):
                continue  # not acknowledged: the client would retry it later
            assert answer == len(part), answer
            edge.apply_events(self.reference, part)
            self.acked += [w for w in part if w.get("event_id")]

    def decide(self, customer: str) -> None:
        msg = edge.decide_message({"customer_id": customer, "channel": "web"})
        answer = run_calls(self.owner(customer), [("decide", (msg,))])[0]
        if not isinstance(answer, SlotMoved | SlotFrozen):
            assert not isinstance(answer, Exception), answer
            edge.decide(self.reference, {"customer_id": customer, "channel": "web"})

    def ask(self, customer: str, request_id: str) -> None:
        """A decide with a request id: a retry of one answered gets that answer again."""
        body = {"customer_id": customer, "channel": "web", "request_id": request_id}
        answer = run_calls(self.owner(customer), [("decide", (edge.decide_message(body),))])[0]
        if isinstance(answer, SlotMoved | SlotFrozen):
            return  # not acknowledged: the client retries it later
        assert not isinstance(answer, Exception), answer
        got = decision_body(answer)
        assert self.answered.setdefault((customer, request_id), got) == got
        edge.decide(self.reference, body)

    def tick(self, seconds: float) -> None:
        self.clock.t += seconds
        for s in [*self.shards, self.reference]:
            s.tick()
            s.flush()

    # -- the supervisor moving slots, and dying ------------------------------------------

    def move(self, lo: int, hi: int, to: int, crash: Countdown, restart: bool) -> None:
        fleet = LocalFleet(self.shards)
        store = SlotMapStore.at(str(self.root / "data"))
        fleet.call_on = crash.wrap(fleet.call_on)  # type: ignore[method-assign]
        store.save = crash.wrap(store.save)  # type: ignore[method-assign]
        mover = SlotMover(store, fleet, retry_s=0.0, sleep=lambda s: None)
        with contextlib.suppress(Crash):  # (dead in its resume, or before its thread ran)
            mover.resume()  # (a migration a crash before this one left)
            mover.move(lo, hi, to)
        if mover.thread is not None:
            mover.thread.join(30)
            assert not mover.thread.is_alive()
        if restart:  # every shard process died too: back from its WAL and the stored map
            for s in self.shards:
                s.close()
            self.shards = [self._open(i) for i in range(SHARDS)]

    def settle(self) -> None:
        """A supervisor starts: whatever migration is left is finished or rolled back."""
        SlotMover(self.store, LocalFleet(self.shards), retry_s=0.0, sleep=lambda s: None).resume()


customer = st.sampled_from(CUSTOMERS)
event = st.builds(
    lambda c, kind, with_id: (c, kind, with_id), customer, st.sampled_from(KINDS), st.booleans()
)
op = st.one_of(
    st.tuples(st.just("events"), st.lists(event, min_size=1, max_size=4)),
    st.tuples(st.just("retry"), st.integers(0, 1000)),
    st.tuples(st.just("decide"), customer),
    st.tuples(st.just("ask"), customer, st.sampled_from(["q0", "q1"])),
    st.tuples(st.just("tick"), st.sampled_from([60.0, 31 * 60.0])),
    st.tuples(
        st.just("move"),
        st.integers(0, SLOTS - 1),
        st.sampled_from([1, 2000, 6000, SLOTS]),
        st.integers(0, SHARDS - 1),
        st.none() | st.integers(0, 10),
        st.booleans(),
        st.booleans(),
    ),
)


def _wire(c: str, kind: str, with_id: bool, n: int, t: float) -> dict[str, Any]:
    props: dict[str, Any] = {"amount": 2.5} if kind == "purchase" else {}
    if kind == "profile_update":
        props = {"age": 20 + n % 50}
    return ev(c, kind, t, f"e{n}" if with_id else None, **props)


def _customer_view(world: World, shard: Shard, c: str) -> dict[str, Any]:
    p = run_calls(shard, [("get_profile", (m.GetProfile(c),))])[0]
    assert not isinstance(p, Exception), (c, p)
    return {
        "profile": (p.known, p.attributes, p.aggregates, p.consent),
        "decisions": [(d.ts, d.channel, d.actions) for d in p.recent_decisions],
        "contacts": sorted(r[1:] for r in shard.contacts.rows() if r[0] == c),
        "timers": sorted(r[1:] for r in shard.timers.rows() if r[0] == c),
        # (key, slot, the tracked decision, the rest: all but the random decision id)
        "answers": sorted((r[:2], r[3:]) for r in shard.history.answers.rows() if r[3] == c),
        "messages": sorted(
            (x.channel, x.trigger, x.ts)
            for x in shard.triggers.outbox.messages()
            if x.customer_id == c
        ),
    }


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (Crash)
@examples(60, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(ops=st.lists(op, max_size=14))
def test_moves_and_crashes_at_any_step_leave_every_customer_as_one_shard_fed_the_same(
    ops: list[Any],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        n = len(CUSTOMERS)  # a population first, so moves carry state
        world.events([_wire(c, "profile_update", True, i, NOW) for i, c in enumerate(CUSTOMERS)])
        for o in ops:
            if o[0] == "events":
                wires = []
                for c, kind, with_id in o[1]:
                    n += 1
                    wires.append(_wire(c, kind, with_id, n, world.clock.t))
                world.events(wires)
            elif o[0] == "retry" and world.acked:
                world.events([world.acked[o[1] % len(world.acked)]])
            elif o[0] == "decide":
                world.decide(o[1])
            elif o[0] == "ask":
                world.ask(o[1], o[2])
            elif o[0] == "tick":
                world.tick(o[1])
            elif o[0] == "move":
                _, lo, size, to, crash_at, after, restart = o
                world.move(lo, min(lo + size, SLOTS), to, Countdown(crash_at, after), restart)
        world.settle()
        final = world.store.load()
        assert final is not None and final.migration is None
        for c in CUSTOMERS:
            owner = world.owner(c)
            assert _customer_view(world, owner, c) == _customer_view(world, world.reference, c)
            for other in world.shards:
                if other is not owner:
                    assert c not in other.store, (c, other.shard_id)
                    assert not [r for r in other.contacts.rows() if r[0] == c]
                    assert not [r for r in other.timers.rows() if r[0] == c]
                    assert not [r for r in other.history.answers.rows() if r[3] == c]
        keyed = [k for s in world.shards for k, slot in s.seen.items() if slot >= 0]
        assert len(keyed) == len(set(keyed))  # no idempotency key on two shards
        assert set(keyed) == {k for k, slot in world.reference.seen.items() if slot >= 0}
        answers = [r[0] for s in world.shards for r in s.history.answers.rows()]
        assert len(answers) == len(set(answers))  # no answer on two shards
        assert set(answers) == {r[0] for r in world.reference.history.answers.rows()}
        for s in world.shards:
            s.close()
