"""Sending to the shards that own what a request names (serving/fanout.py), over real
shards (tests/unit/identity_harness.py): items grouped one call per shard, a part
answered `moved` sent again to where its customers went, nothing sent twice that was
answered, and a request that merges keep moving answered 503 `merge_in_progress`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.messages import ApplyEvents, GetProfile, LeaseOutbound, UnfinishedMerges
from actors.remote import ShardUnavailable
from decisioning.profile import Event
from serving.fanout import MAX_HOPS, Fanout, group
from serving.identity import Identities
from serving.wire import WireError
from tests.conftest import examples
from tests.unit.decisioning.policy.test_decide import NOW
from tests.unit.decisioning.profile.test_identity import _config
from tests.unit.identity_harness import LocalRouter, fast, identities


def view(who: str, event_id: str | None) -> Event:
    return Event(who, "page_view", NOW, {}, event_id)


def run(body: Callable[[Identities, LocalRouter], Awaitable[None]], tmp: Path) -> None:
    ident, router = identities(fast(_config()), 2, tmp)
    try:
        asyncio.run(body(ident, router))
    finally:
        router.close()


def _rehome(e: Event, customer: str) -> Event:
    return replace(e, customer_id=customer)


def _customer(e: Event) -> str:
    return e.customer_id


def _apply(events: list[Event]) -> ApplyEvents:
    return ApplyEvents(tuple(events))


def _apart(router: LocalRouter) -> tuple[str, str]:
    """Two customers on different shards."""
    ids = [f"c{i}" for i in range(50)]
    first = ids[0]
    return first, next(c for c in ids if router.shard_of(c) != router.shard_of(first))


@given(
    items=st.lists(st.tuples(st.integers(0, 3), st.integers()), max_size=30),
)
@examples(100)
def test_group_sends_each_item_once_in_its_order(items: list[tuple[int, int]]) -> None:
    parts = group(items, lambda item: item[0])
    assert sorted(i for part in parts.values() for i in part) == sorted(items)
    for shard, part in parts.items():
        assert part == [i for i in items if i[0] == shard]


async def _merged_on(ident: Identities, router: LocalRouter, shard: int, survivor: str) -> str:
    """A customer on `shard` merged into `survivor`."""
    merged = next(f"m{i}" for i in range(99) if router.shard_of(f"m{i}") == shard)
    await ident.fanout.follow("apply_events", [view(merged, "m")], _customer, _rehome, _apply)
    assert (await ident.merge(survivor, merged))["changed"] is True
    return merged


def test_a_part_answered_moved_goes_again_to_where_its_customers_live_now(
    tmp_path: Path,
) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        survivor, other = _apart(router)
        merged = await _merged_on(ident, router, router.shard_of(other), survivor)
        router.log.clear()
        # no event ids: an event applied twice would count twice
        batch = [view(merged, None), view(other, None), view(survivor, None)]
        parts = await ident.fanout.follow("apply_events", batch, _customer, _rehome, _apply)
        applied = sorted(e.customer_id for p in parts for e in p.items)
        assert applied == sorted([survivor, other, survivor])
        assert sum(p.answer for p in parts) == 3
        sends = [shard for shard, method in router.log if method == "apply_events"]
        # merged and other share a part: answered moved, nothing of it applied, it goes
        # again (merged now to the survivor's shard); the survivor's own part once
        s, o = router.shard_of(survivor), router.shard_of(other)
        assert sorted(sends) == sorted([o, s, s, o])
        for who, seen in ((survivor, 3.0), (other, 1.0)):
            profile, at = await ident.fanout.follow_one(who, "get_profile", GetProfile)
            assert at == who and profile.aggregates["views_all"] == seen
        profile, at = await ident.fanout.follow_one(merged, "get_profile", GetProfile)
        assert at == survivor and profile.aggregates["views_all"] == 3.0

    run(body, tmp_path)


def test_the_first_error_is_raised_and_nothing_more_is_sent(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        survivor, other = _apart(router)
        merged = await _merged_on(ident, router, router.shard_of(other), survivor)
        bad = Event(survivor, "profile_update", NOW, {"shoe": 3}, "b")
        router.log.clear()
        with pytest.raises(WireError) as refused:
            await ident.fanout.follow(
                "apply_events", [view(merged, "x"), bad], _customer, _rehome, _apply
            )
        assert (refused.value.status, refused.value.code) == (422, "unknown_field")
        assert [m for _, m in router.log].count("apply_events") == 2  # one round, no more

    run(body, tmp_path)


def test_a_customer_merges_keep_moving_is_a_temporary_503(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        a, b = _apart(router)
        await ident.fanout.follow(
            "apply_events", [view(a, "1"), view(b, "2")], _customer, _rehome, _apply
        )
        assert (await ident.merge(b, a))["changed"] is True
        stuck = Fanout(router, root=lambda c: asyncio.sleep(0, c))  # moved again each time
        router.log.clear()
        with pytest.raises(ShardUnavailable) as busy:
            await stuck.follow_one(a, "get_profile", GetProfile)
        assert busy.value.code == "merge_in_progress"
        assert router.log == [(router.shard_of(a), "get_profile")] * (MAX_HOPS + 1)
        with pytest.raises(ShardUnavailable):
            await stuck.follow("apply_events", [view(a, "3")], _customer, _rehome, _apply)

    run(body, tmp_path)


def test_stop_answers_instead_of_a_call(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        router.log.clear()
        answer, at = await ident.fanout.follow_one(
            "x", "get_profile", GetProfile, stop=lambda c: "stopped" if c == "x" else None
        )
        assert (answer, at, router.log) == ("stopped", "x", [])

    run(body, tmp_path)


def test_everywhere_calls_every_shard_once(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        router.log.clear()
        assert await ident.fanout.everywhere("unfinished_merges", UnfinishedMerges(60.0)) == [
            [],
            [],
        ]
        assert await ident.fanout.everywhere("lease_outbound", LeaseOutbound("email", 5)) == [
            [],
            [],
        ]
        assert sorted(router.log) == sorted(
            [(0, "unfinished_merges"), (1, "unfinished_merges"), (0, "lease_outbound"),
             (1, "lease_outbound")]
        )  # fmt: skip

    run(body, tmp_path)
