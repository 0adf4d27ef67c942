"""Identity on the shards: links, the three merge steps, forward pointers, replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.messages import (
    Absorb,
    Cancelled,
    CancelMerge,
    Compress,
    DropMerged,
    ForgetIdentity,
    Freeze,
    IdentityOf,
    Link,
    Pin,
    Resolve,
    Resolved,
)
from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import AlreadyMerged, ConfigError, MergeBusy, Moved
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock


def _config() -> Config:
    return config_from_dict(
        {
            **SMALL,
            "identity": {"kinds": ["cookie_id", "email_hash"], "links": {"login": ["cookie_id"]}},
            "decisioning": {
                **SMALL.get("decisioning", {}),
                "channel_caps": {"web": {"per_day": 5}},
            },
        }
    )


def ev(cid: str, kind: str, dt: float = 0.0, **props: Any) -> dict[str, Any]:
    return {"customer_id": cid, "type": kind, "ts": NOW + dt, "properties": props}


def _merge(src: Shard, dst: Shard, merged: str, survivor: str, merge_id: str = "m1") -> None:
    frozen = src.freeze(Freeze(merged, survivor))
    dst.absorb(Absorb(survivor, merge_id, frozen.state, frozen.contacts))
    src.drop_merged(DropMerged(merged))


def test_links_resolve_and_the_newest_link_wins() -> None:
    shard = Shard(0, _config(), clock=Clock())
    assert shard.resolve(Resolve("cookie_id:abc")) == Resolved(None, False)
    first = shard.link(Link("cookie_id:abc", "c1"))
    assert (first.previous, first.owed) == (None, "c1")  # its profile is owed to c1
    assert shard.link(Link("cookie_id:abc", "c1")).previous == "c1"
    assert shard.link(Link("cookie_id:abc", "c2")).previous == "c1"
    assert shard.resolve(Resolve("cookie_id:abc")) == Resolved("c2", True)
    assert shard.identity_of(IdentityOf("c2")).aliases == ("cookie_id:abc",)


def test_a_merge_across_two_shards_moves_state_and_forwards(tmp_path: Path) -> None:
    a = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path / "a"))
    b = Shard(1, _config(), clock=Clock(), log_dir=str(tmp_path / "b"))
    edge.apply_events(a, [ev("anon", "page_view", -60), ev("anon", "page_view", -30)])
    edge.decide(a, {"customer_id": "anon", "channel": "web"})  # a contact, counted by the cap
    edge.apply_events(b, [ev("known", "page_view", -10), ev("known", "consent", 0, web=False)])
    history = list(a.contacts.entries["anon"])
    assert history
    _merge(a, b, "anon", "known")
    view = edge.get_profile(b, "known")
    assert view["aggregates"]["views_all"] == 3.0
    assert view["consent"]["web"] is False
    assert b.contacts.entries["known"] == history  # the contact history came along
    assert "anon" not in a.store.ids
    for call in (
        lambda: edge.decide(a, {"customer_id": "anon", "channel": "web"}),
        lambda: edge.apply_events(a, [ev("anon", "page_view")]),
        lambda: edge.get_profile(a, "anon"),
    ):
        with pytest.raises(Moved) as e:
            call()
        assert (e.value.customer, e.value.target, e.value.code) == ("anon", "known", "moved")
    # a retried merge folds nothing twice
    assert b.absorb(Absorb("known", "m1", None, [])) is False
    a.flush()
    b.flush()
    # both shards come back from their WAL exactly; and from snapshots
    a2 = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path / "a"))
    b2 = Shard(1, _config(), clock=Clock(), log_dir=str(tmp_path / "b"))
    assert (a2.state_digest(), b2.state_digest()) == (a.state_digest(), b.state_digest())
    assert a2.forwards == {"anon": "known"}
    a2.snapshot()
    b2.snapshot()
    a3 = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path / "a"))
    b3 = Shard(1, _config(), clock=Clock(), log_dir=str(tmp_path / "b"))
    assert (a3.state_digest(), b3.state_digest()) == (a.state_digest(), b.state_digest())
    assert edge.get_profile(b3, "known")["aggregates"]["views_all"] == 3.0


def test_outcomes_of_a_merged_customer_go_to_the_survivor() -> None:
    a = Shard(0, _config(), clock=Clock())
    b = Shard(1, _config(), clock=Clock())
    d = edge.decide(a, {"customer_id": "old", "channel": "web", "limit": 1})
    _merge(a, b, "old", "new")
    out = edge.record_outcomes(a,
        [{"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"],
          "outcome": "click", "ts": NOW}]
    )  # fmt: skip
    assert out.accepted == 1
    [fwd] = out.forward
    assert (fwd.customer_id, fwd.type) == ("new", "outcome.click")
    assert edge.apply_events(b, out.forward) == 1


def test_erasure_forgets_links_and_forwards() -> None:
    shard = Shard(0, _config(), clock=Clock())
    shard.link(Link("cookie_id:x", "c"))
    shard.freeze(Freeze("old", "c"))
    shard.link(Link("email_hash:y", "other"))
    assert shard.forget_identity(ForgetIdentity("c")) == [
        "old"
    ]  # merged into c: the caller forgets it too
    assert shard.aliases == {"email_hash:y": "other"} and shard.forwards == {}
    assert set(shard.book.owed) == {"email_hash:y"}  # merges into c are not owed any more
    shard.link(Link("cookie_id:z", "gone"))
    edge.erase_profile(shard, "gone")
    shard.forget_identity(ForgetIdentity("gone"))  # (the ingress calls it on every shard)
    assert "cookie_id:z" not in shard.aliases


def test_identity_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown identifier kinds: device_id"):
        config_from_dict(
            {**SMALL, "identity": {"kinds": ["cookie_id"], "links": {"login": ["device_id"]}}}
        )


def test_erasing_the_survivor_erases_what_was_merged_into_it(tmp_path: Path) -> None:
    a = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path))
    edge.decide(a, {"customer_id": "old", "channel": "web"})
    _merge(a, a, "old", "new")
    edge.erase_profile(a, "new")
    assert a.forget_identity(ForgetIdentity("new")) == ["old"]
    assert not [r for r in a.decisions.values() if r.customer_id in ("old", "new")]
    a.flush()
    again = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path))
    assert again.state_digest() == a.state_digest()
    assert "old" not in again.store.ids


def test_the_merge_steps_refuse_what_could_close_a_cycle() -> None:
    """decisioning/profile/identity.py: a pointer is only made into a pinned survivor, and a
    pinned survivor is never frozen."""
    shard = Shard(0, _config(), clock=Clock())
    shard.pin(Pin("s", "t1", "m"))
    with pytest.raises(MergeBusy):  # s is the survivor of a merge in flight
        shard.freeze(Freeze("s", "other", "t2"))
    first = shard.freeze(Freeze("m", "s", "t1"))
    assert shard.freeze(Freeze("m", "s", "t1")).merge_id == first.merge_id  # a repeat
    assert shard.freeze(Freeze("m", "s", "t9")).merge_id == first.merge_id  # another finisher
    with pytest.raises(AlreadyMerged) as e:
        shard.freeze(Freeze("m", "other", "t3"))
    assert e.value.target == "s"
    with pytest.raises(Moved):  # a survivor merged away is never pinned
        shard.pin(Pin("m", "t4", "x"))
    # a stale attempt called off before it froze cannot freeze afterwards ...
    shard.pin(Pin("s", "t5", "late"))
    assert shard.cancel_merge(CancelMerge("late", "s", "t5")) == Cancelled(False, False)
    with pytest.raises(MergeBusy):
        shard.freeze(Freeze("late", "s", "t5"))
    # ... and one that froze is finished, not called off
    assert shard.cancel_merge(CancelMerge("m", "s", "t1")) == Cancelled(True, True)
    assert shard.freeze(Freeze("m", "s", "t1")).merge_id == first.merge_id
    # a pointer moves only to the end of its own chain, and not while its merge is owed
    assert shard.compress(Compress("m", "s", "z")) is False
    shard.drop_merged(DropMerged("m"))
    assert shard.compress(Compress("m", "elsewhere", "z")) is False
    assert shard.compress(Compress("m", "s", "z")) is True and shard.forwards["m"] == "z"
