"""Merges at the ingress over real shards (tests/unit/identity_harness.py): an id merged
already, chains of merges, merges racing each other, erasure of a merged person, and a
hypothesis property over random sequences of events, logins, merges and erasures."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from actors.messages import Decide, EraseProfile, GetProfile
from decisioning.profile import Event
from serving.events import ingest
from serving.identity import Identities, is_error
from tests.conftest import examples
from tests.unit.decisioning.policy.test_decide import NOW
from tests.unit.decisioning.profile.test_identity import _config
from tests.unit.identity_harness import LocalRouter, fast, identities

CUSTOMERS = ["c0", "c1", "c2"]
COOKIES = ["cookie_id:a", "cookie_id:b"]
IDS = CUSTOMERS + COOKIES


def view(who: str, event_id: str | None = None) -> Event:
    return Event(who, "page_view", NOW, {}, event_id)


def login(who: str, cookie: str, event_id: str | None = None) -> Event:
    return Event(who, "login", NOW, {"cookie_id": cookie.removeprefix("cookie_id:")}, event_id)


async def views(ident: Identities, who: str) -> float:
    profile, _ = await ident.call(await ident.canonical(who), "get_profile", GetProfile)
    assert not is_error(profile), profile
    return float(profile.aggregates["views_all"])


async def erase(ident: Identities, asked: str) -> None:
    """What DELETE /v1/profiles/{id} does."""
    customer = await ident.canonical(asked)
    result, customer = await ident.call(customer, "erase_profile", EraseProfile)
    assert not is_error(result), result
    await ident.forget(asked, customer)


def run(shards: int, body: Callable[[Identities, LocalRouter], Awaitable[None]], tmp: Path) -> None:
    ident, router = identities(fast(_config()), shards, tmp)
    try:
        asyncio.run(body(ident, router))
    finally:
        router.close()


@pytest.mark.parametrize("shards", [1, 2])
def test_an_id_merged_already_is_refused_and_its_events_still_apply(
    shards: int, tmp_path: Path
) -> None:
    """The schemathesis report: merge 0 into A, then 0 into B; events for 0 then
    answered 503 for minutes."""

    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view("0"), view("A"), view("B")])
        first = await ident.merge("A", "0")
        assert first["changed"] is True
        second = await ident.merge("B", "0")
        assert is_error(second, "already_merged") and second.target == "A"
        assert (await ident.merge("A", "0"))["changed"] is False  # a retry: nothing to do
        assert await ingest(ident, [view("0")]) == {"accepted": 1}
        assert await views(ident, "A") == 3.0
        assert (await ident.merge("B", "A"))["changed"] is True  # name the one it became
        assert await ingest(ident, [view("0"), view("A")]) == {"accepted": 2}
        assert await views(ident, "0") == await views(ident, "B") == 6.0
        assert [s.forwards.get("0") for s in router.shards if "0" in s.forwards] == ["B"]
        assert router.forward_cycles() == []

    run(shards, body, tmp_path)


@pytest.mark.parametrize("shards", [1, 2])
def test_a_long_chain_of_merges_resolves_and_is_shortened(shards: int, tmp_path: Path) -> None:
    chain = [f"k{i}" for i in range(12)]  # each merged into the next, three times MAX_HOPS

    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view(c) for c in chain])
        for merged, survivor in zip(chain, chain[1:], strict=False):
            assert (await ident.merge(survivor, merged))["changed"] is True
        assert await ingest(ident, [view("k0"), view("k5")]) == {"accepted": 2}
        assert await views(ident, "k0") == 14.0
        forwards = {m: t for s in router.shards for m, t in s.forwards.items()}
        assert forwards["k0"] == forwards["k5"] == "k11"  # one hop from now on

    run(shards, body, tmp_path)


@pytest.mark.parametrize("shards", [1, 2])
def test_merges_racing_each_other_never_form_a_cycle(shards: int, tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view(c) for c in ("A", "B", "C")])
        for pairs in ([("A", "B"), ("B", "A")], [("B", "C"), ("C", "B"), ("C", "B")]):
            results = await asyncio.gather(
                *(ident.merge(s, m) for s, m in pairs), return_exceptions=True
            )
            assert router.forward_cycles() == []
            for r in results:  # each merged, found it done, or was told to retry
                assert isinstance(r, dict) or getattr(r, "code", None) == "merge_in_progress"
        assert await ingest(ident, [view("A"), view("B"), view("C")]) == {"accepted": 3}
        people = {await ident.root(c) for c in ("A", "B", "C")}
        assert sum([await views(ident, p) for p in people]) == 6.0
        assert not any(s.book.pins or s.book.owed for s in router.shards)

    run(shards, body, tmp_path)


def test_three_merges_around_a_circle_at_once(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view(c) for c in ("A", "B", "C")])
        await asyncio.gather(
            ident.merge("B", "A"), ident.merge("C", "B"), ident.merge("A", "C"),
            return_exceptions=True,
        )  # fmt: skip
        assert router.forward_cycles() == []
        people = {await ident.root(c) for c in ("A", "B", "C")}
        assert sum([await views(ident, p) for p in people]) == 3.0

    run(2, body, tmp_path)


def test_a_batch_naming_many_merged_customers_goes_again_once(tmp_path: Path) -> None:
    olds = [f"old{i}" for i in range(8)]  # more than MAX_HOPS, all on one shard

    async def body(ident: Identities, router: LocalRouter) -> None:
        for old in olds:
            await ident.merge("new", old)
        before = len(router.log)
        assert await ingest(ident, [view(o) for o in olds]) == {"accepted": 8}
        assert await views(ident, "new") == 8.0
        sent = [m for _, m in router.log[before:] if m == "apply_events"]
        assert len(sent) == 2  # refused once with every merged customer named, then applied

    run(1, body, tmp_path)


def test_merging_a_customer_into_itself_through_its_identifier(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view("cookie_id:x"), view("X"), login("X", "cookie_id:x")])
        assert await views(ident, "X") == 2.0
        for survivor, merged in (("cookie_id:x", "X"), ("X", "cookie_id:x")):
            r = await ident.merge(survivor, merged)
            assert r["changed"] is False, r
        assert await views(ident, "cookie_id:x") == 2.0

    run(2, body, tmp_path)


def test_a_link_to_a_customer_merged_away_reaches_its_survivor(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view("cookie_id:y"), view("cookie_id:y"), view("C"), view("D")])
        await ident.merge("D", "C")
        assert await ingest(ident, [login("C", "cookie_id:y")]) == {"accepted": 1}
        assert await views(ident, "D") == 4.0
        assert await views(ident, "cookie_id:y") == 4.0

    run(2, body, tmp_path)


@pytest.mark.parametrize("asked", ["0", "A", "B"])
def test_erasing_any_id_of_a_person_forgets_everyone_merged_into_it(
    asked: str, tmp_path: Path
) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view("0"), view("A"), view("B"), view("cookie_id:z")])
        for who in ("0", "A"):  # decisions stay tracked after a merge, for late outcomes
            await ident.call(who, "decide", lambda c: Decide(c, "web"))
        await ident.merge("A", "0")
        await ident.merge("B", "A")  # 0 -> A -> B: two hops, nothing shortened yet
        await ingest(ident, [login("B", "cookie_id:z")])
        await erase(ident, asked)  # any id of the person erases all of it
        assert [(s.forwards, s.aliases) for s in router.shards] == [({}, {})] * 2
        assert [list(s.decisions) for s in router.shards] == [[], []]
        assert router.audit.entries() == []
        assert await ingest(ident, [view("0")]) == {"accepted": 1}
        assert await views(ident, "0") == 1.0  # a new, unrelated profile
        assert await views(ident, "B") == 0.0

    run(2, body, tmp_path)


# -- the property --------------------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(IDS)),
    st.tuples(st.just("login"), st.sampled_from(IDS), st.sampled_from(COOKIES)),
    st.tuples(st.just("merge"), st.sampled_from(IDS), st.sampled_from(IDS)),
    st.tuples(
        st.just("race"),
        st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)),
        st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)),
    ),
    st.tuples(st.just("erase"), st.sampled_from(IDS)),
    st.tuples(st.just("decide"), st.sampled_from(IDS)),
)


def _live_views(router: LocalRouter) -> float:
    total = 0.0
    for s in router.shards:
        for cid in list(s.store.ids):
            assert cid not in s.forwards, f"{cid} is merged away but its row stayed"
            total += s.store.profile_view(cid, NOW)["aggregates"]["views_all"]
    return total


async def _step(ident: Identities, router: LocalRouter, step: tuple[Any, ...]) -> float:
    """Run one step and check what it answered; returns the views it erased."""
    kind = step[0]
    if kind == "event":
        before = await views(ident, step[1])
        assert await ingest(ident, [view(step[1])]) == {"accepted": 1}
        assert await views(ident, step[1]) == before + 1
    elif kind == "login":
        assert await ingest(ident, [login(step[1], step[2])]) == {"accepted": 1}
    elif kind == "merge":
        r = await ident.merge(*step[1:])
        assert not is_error(r) or is_error(r, "already_merged"), r
    elif kind == "race":  # one may be told to retry; a retry then goes through
        rs = await asyncio.gather(*(ident.merge(s, m) for s, m in step[1:]), return_exceptions=True)
        for (s, m), r in zip(step[1:], rs, strict=True):
            if is_error(r, "merge_in_progress") or getattr(r, "code", "") == "merge_in_progress":
                r = await ident.merge(s, m)
            assert isinstance(r, dict) or is_error(r, "already_merged"), r
    elif kind == "erase":
        gone = await views(ident, step[1])
        await erase(ident, step[1])
        return gone
    else:
        customer = await ident.canonical(step[1])
        d, at = await ident.call(customer, "decide", lambda c: Decide(c, "web"))
        assert not is_error(d) and d.decision.customer_id == at == await ident.root(customer), d
    return 0.0


async def _check(ident: Identities, router: LocalRouter, acked: float) -> None:
    assert router.forward_cycles() == []
    for who in IDS:  # every id resolves, and events for it apply
        await ident.root(await ident.canonical(who))
    assert _live_views(router) == acked  # nothing acknowledged lost or counted twice
    assert not any(s.book.owed or s.book.pins for s in router.shards)  # all merges done


@examples(60, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(shards=st.sampled_from([1, 2]), steps=st.lists(STEP, min_size=1, max_size=14))
def test_any_sequence_keeps_every_id_resolvable_and_every_event_counted(
    shards: int, steps: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:

        async def body(ident: Identities, router: LocalRouter) -> None:
            acked = 0.0
            for step in steps:
                acked -= await _step(ident, router, step)
                acked += step[0] == "event"
                await _check(ident, router, acked)
            digests = [s.state_digest() for s in router.shards]
            for i in range(shards):  # the identity records come back from the WAL exactly
                router.restart(i)
            assert [s.state_digest() for s in router.shards] == digests

        run(shards, body, Path(tmp))
