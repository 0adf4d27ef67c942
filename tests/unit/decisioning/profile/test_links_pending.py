"""Events applied, then a login's merge cut short (issue 15, item 4): the answer says
the events were applied and which link is pending; the merge is owed durably on the
identifier's shard and finishes later, exactly once, whoever finishes it."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from actors.messages import EraseProfile, Freeze, GetProfile, Link
from actors.remote import ShardUnavailable
from actors.shard import Shard
from decisioning.journal import snapshot
from serving.events import ingest
from serving.identity import STALE_PIN_S, Identities, is_error
from tests.conftest import examples
from tests.unit.decisioning.policy.test_decide import Clock
from tests.unit.decisioning.profile.test_identity import _config
from tests.unit.decisioning.profile.test_identity_merges import (
    COOKIES,
    IDS,
    _live_views,
    login,
    run,
    view,
    views,
)
from tests.unit.identity_harness import SUPERVISOR, LocalRouter, fast

Y = "cookie_id:y"

# (the step that fails, whether it ran before its answer was lost)
STEPS = [
    ("pin", False),
    ("pin", True),
    ("freeze", False),
    ("freeze", True),
    ("absorb", False),
    ("absorb", True),
    ("audit_identity", False),
    ("audit_identity", True),
    ("drop_merged", False),
    ("drop_merged", True),
    ("unpin", False),
]


async def _anonymous_then_login(
    ident: Identities, router: LocalRouter, step: str, after: bool
) -> None:
    await ingest(ident, [view(Y, "v1"), view(Y, "v2"), view("c", "v3")])
    router.fail(step, SUPERVISOR if step == "audit_identity" else None, after=after)
    answer = await ingest(ident, [login("c", Y, "login-1")])
    assert answer["accepted"] == 1, answer  # applied, and said so
    [pending] = answer["links_pending"]
    assert (pending["identifier"], pending["customer_id"]) == (Y, "c")
    assert pending["error"]["code"] == "shard_unavailable"


async def _finish(ident: Identities, router: LocalRouter, how: str) -> None:
    if how == "retry":  # the client sends the same event again
        assert await ingest(ident, [login("c", Y, "login-1")]) == {"accepted": 1}
    elif how == "resolve":  # any request naming the identifier
        await ident.canonical(Y)
    else:
        router.clock.t += STALE_PIN_S  # (the pin of the attempt cut short is stale too)
        await ident.sweep()


async def _done_exactly_once(ident: Identities, router: LocalRouter) -> None:
    assert await views(ident, "c") == await views(ident, Y) == 3.0  # folded once
    [entry] = [e for e in router.audit.entries() if e["merged"] == Y]
    assert (entry["survivor"], entry["reason"], entry["had_profile"]) == ("c", "link", True)
    assert not any(s.book.owed for s in router.shards)
    assert all(Y not in s.store.ids for s in router.shards)  # the anonymous row went
    router.clock.t += STALE_PIN_S  # a later sweep changes nothing, and lets stale pins go
    await ident.sweep()
    assert await views(ident, "c") == 3.0 and len(router.audit.entries()) == 1
    assert not any(s.book.pins or s.book.owed for s in router.shards)


@pytest.mark.parametrize("how", ["retry", "resolve", "sweep"])
@pytest.mark.parametrize(("step", "after"), STEPS)
def test_a_login_merge_cut_short_is_reported_and_finished_once(
    step: str, after: bool, how: str, tmp_path: Path
) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await _anonymous_then_login(ident, router, step, after)
        folded = step not in ("pin", "freeze") and (step != "absorb" or after)
        profile, _ = await ident.call("c", "get_profile", GetProfile)
        assert profile.aggregates["views_all"] == (3.0 if folded else 1.0)
        await _finish(ident, router, how)
        c = router.shards[router.shard_of("c")]
        assert c.counters["duplicates"] == (how == "retry")  # the login counted once
        await _done_exactly_once(ident, router)

    run(2, body, tmp_path)


def test_a_link_that_was_never_recorded_is_made_by_the_retry(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await _anonymous_then_login(ident, router, "link", False)
        assert not any(s.book.owed or s.aliases for s in router.shards)  # nothing to finish
        assert await views(ident, "c") == 1.0
        await _finish(ident, router, "retry")
        await _done_exactly_once(ident, router)

    run(2, body, tmp_path)


def test_finishers_at_once_fold_the_merge_once(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await _anonymous_then_login(ident, router, "absorb", True)  # folded, answer lost
        router.clock.t += STALE_PIN_S
        await asyncio.gather(
            ident.sweep(), ident.finish(Y), ident.canonical(Y), _finish(ident, router, "retry")
        )
        await _done_exactly_once(ident, router)

    run(2, body, tmp_path)


@pytest.mark.parametrize("snapshot_first", [False, True])
def test_an_unfinished_merge_survives_a_restart_of_every_shard(
    snapshot_first: bool, tmp_path: Path
) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await _anonymous_then_login(ident, router, "absorb", False)
        for i, shard in enumerate(router.shards):
            if snapshot_first:
                shard.snapshot()
            router.restart(i)
        assert [m for s in router.shards for m in s.book.owed] == [Y]
        await _finish(ident, router, "sweep")
        await _done_exactly_once(ident, router)

    run(2, body, tmp_path)


def test_a_stale_attempt_is_called_off_and_cannot_freeze_afterwards(tmp_path: Path) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await ingest(ident, [view("A"), view("B"), view("C")])
        router.fail("freeze")  # the ingress that runs this merge is gone before step 2
        with pytest.raises(ShardUnavailable):
            await ident.merge("A", "B")
        busy = await ident.merge("C", "A")  # A holds a pin: it is not merged away now
        assert is_error(busy, "merge_in_progress")  # (503, Retry-After)
        await ident.sweep()
        assert is_error(await ident.merge("C", "A"), "merge_in_progress")  # not stale yet
        router.clock.t += STALE_PIN_S
        await ident.sweep()
        assert (await ident.merge("C", "A"))["changed"] is True
        b = router.shards[router.shard_of("B")]
        assert "B" not in b.forwards and await views(ident, "B") == 1.0
        [token] = b.book.cancelled  # the attempt's own freeze, arriving late, is refused
        with pytest.raises(Exception, match="called off"):
            b.freeze(Freeze("B", "C", token))

    run(2, body, tmp_path)


def test_a_format_1_snapshot_still_loads_its_links_and_forwards(tmp_path: Path) -> None:
    shard = Shard(0, fast(_config()), clock=Clock(), log_dir=str(tmp_path))
    shard.link(Link(Y, "c"))
    shard.freeze(Freeze("old", "new"))
    shard.snapshot()
    shard.close()
    [(_, _, name)] = snapshot.snapshots(str(tmp_path))
    path = tmp_path / name
    old = pa.table({"kind": ["alias", "forward"], "key": [Y, "old"], "target": ["c", "new"]})
    for file, table in (("identity.arrow", old), ("profiles.arrow", None)):
        if table is None:  # the format the metadata states
            with pa.memory_map(str(path / file)) as src:
                table = ipc.open_file(src).read_all()
            meta = json.loads(table.schema.metadata[b"nextbest"])
            table = table.replace_schema_metadata({"nextbest": json.dumps({**meta, "format": 1})})
        with pa.OSFile(str(path / file), "wb") as sink, ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
    again = Shard(0, fast(_config()), clock=Clock(), log_dir=str(tmp_path))
    assert (again.aliases, again.forwards, again.book.owed) == ({Y: "c"}, {"old": "new"}, {})


def test_erasing_a_person_whose_merge_is_unfinished_erases_the_part_not_folded(
    tmp_path: Path,
) -> None:
    async def body(ident: Identities, router: LocalRouter) -> None:
        await _anonymous_then_login(ident, router, "absorb", False)  # frozen, not folded
        assert any(Y in s.store.ids for s in router.shards)
        result, customer = await ident.call(Y, "erase_profile", EraseProfile)
        assert customer == "c" and result.erased is True
        await ident.forget(Y, customer)
        assert not any(Y in s.store.ids or s.book.owed for s in router.shards)
        router.clock.t += STALE_PIN_S
        await ident.sweep()  # nothing is left to finish, or to bring the row back
        assert await views(ident, "c") == 0.0 and await views(ident, Y) == 0.0
        assert not any(s.book.pins for s in router.shards)

    run(2, body, tmp_path)


# -- the property, with failures ----------------------------------------------------

FAULTY = ["link", "pin", "freeze", "absorb", "audit_identity", "drop_merged", "unpin"]
STEP = st.one_of(
    st.tuples(st.just("event"), st.sampled_from(IDS)),
    st.tuples(st.just("login"), st.sampled_from(IDS), st.sampled_from(COOKIES)),
    st.tuples(st.just("merge"), st.sampled_from(IDS), st.sampled_from(IDS)),
    st.tuples(st.just("fault"), st.sampled_from(FAULTY), st.booleans()),
    st.tuples(st.just("sweep"), st.booleans()),
)


async def _faulty_step(ident: Identities, router: LocalRouter, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "event":
        assert (await ingest(ident, [view(step[1])]))["accepted"] == 1
    elif kind == "login":
        answer = await ingest(ident, [login(step[1], step[2])])
        assert answer["accepted"] == 1  # applied, whatever became of the link
    elif kind == "merge":
        try:
            r = await ident.merge(step[1], step[2])
        except ShardUnavailable:
            return  # (503: the client retries)
        assert not is_error(r) or is_error(r, "already_merged") or is_error(r, "merge_in_progress")
    elif kind == "fault":
        router.fail(step[1], SUPERVISOR if step[1] == "audit_identity" else None, after=step[2])
    else:
        if step[1]:
            router.clock.t += STALE_PIN_S
        await ident.sweep()


@examples(200, HealthCheck.too_slow)
@given(shards=st.sampled_from([1, 2]), steps=st.lists(STEP, min_size=1, max_size=16))
def test_with_steps_failing_anywhere_every_merge_finishes_and_counts_once(
    shards: int, steps: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:

        async def body(ident: Identities, router: LocalRouter) -> None:
            await ingest(ident, [view(who) for who in IDS])  # every profile has views
            acked = len(IDS)
            for step in steps:
                await _faulty_step(ident, router, step)
                acked += step[0] == "event"
                assert router.forward_cycles() == []
                for who in IDS:  # every id resolves all along
                    await ident.root(await ident.canonical(who))
            router.faults.clear()
            for _ in range(2):  # (a stale pin is let go once the merge it froze is done)
                router.clock.t += STALE_PIN_S
                await ident.sweep()
            assert not any(s.book.owed or s.book.pins for s in router.shards)
            assert _live_views(router) == acked  # each event counted once, none lost
            assert len({e["merge_id"] for e in router.audit.entries()}) == len(
                router.audit.entries()
            )

        run(shards, body, Path(tmp))
