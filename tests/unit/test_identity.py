"""Identity on the shards: links, the three merge steps, forward pointers, replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.shard import Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import AlreadyMerged, ConfigError, MergeBusy, Moved
from tests.conftest import SMALL
from tests.unit.test_decide import NOW, Clock


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
    frozen = src.freeze(merged, survivor)
    dst.absorb(survivor, merge_id, frozen)
    src.drop_merged(merged)


def test_links_resolve_and_the_newest_link_wins() -> None:
    shard = Shard(0, _config(), clock=Clock())
    assert shard.resolve("cookie_id:abc") == {"customer_id": None, "owed": False}
    first = shard.link("cookie_id:abc", "c1")
    assert (first["previous"], first["owed"]) == (None, "c1")  # its profile is owed to c1
    assert shard.link("cookie_id:abc", "c1")["previous"] == "c1"
    assert shard.link("cookie_id:abc", "c2")["previous"] == "c1"
    assert shard.resolve("cookie_id:abc") == {"customer_id": "c2", "owed": True}
    assert shard.identity_of("c2")["aliases"] == ["cookie_id:abc"]


def test_a_merge_across_two_shards_moves_state_and_forwards(tmp_path: Path) -> None:
    a = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path / "a"))
    b = Shard(1, _config(), clock=Clock(), log_dir=str(tmp_path / "b"))
    a.apply_events([ev("anon", "page_view", -60), ev("anon", "page_view", -30)])
    a.decide({"customer_id": "anon", "channel": "web"})  # a contact, counted by the cap
    b.apply_events([ev("known", "page_view", -10), ev("known", "consent", 0, web=False)])
    history = list(a.contacts.entries["anon"])
    assert history
    _merge(a, b, "anon", "known")
    view = b.get_profile("known")
    assert view["aggregates"]["views_all"] == 3.0
    assert view["consent"]["web"] is False
    assert b.contacts.entries["known"] == history  # the contact history came along
    assert "anon" not in a.store.ids
    for call in (
        lambda: a.decide({"customer_id": "anon", "channel": "web"}),
        lambda: a.apply_events([ev("anon", "page_view")]),
        lambda: a.get_profile("anon"),
    ):
        with pytest.raises(Moved) as e:
            call()
        assert (e.value.customer, e.value.target, e.value.code) == ("anon", "known", "moved")
    # a retried merge folds nothing twice
    assert b.absorb("known", "m1", {"known": True, "state": None, "contacts": []}) is False
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
    assert b3.get_profile("known")["aggregates"]["views_all"] == 3.0


def test_outcomes_of_a_merged_customer_go_to_the_survivor() -> None:
    a = Shard(0, _config(), clock=Clock())
    b = Shard(1, _config(), clock=Clock())
    d = a.decide({"customer_id": "old", "channel": "web", "limit": 1})
    _merge(a, b, "old", "new")
    out = a.record_outcomes(
        [{"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"],
          "outcome": "click", "ts": NOW}]
    )  # fmt: skip
    assert isinstance(out, dict) and out["accepted"] == 1
    [fwd] = out["forward"]
    assert (fwd["customer_id"], fwd["type"]) == ("new", "outcome.click")
    assert b.apply_events(out["forward"]) == 1


def test_erasure_forgets_links_and_forwards() -> None:
    shard = Shard(0, _config(), clock=Clock())
    shard.link("cookie_id:x", "c")
    shard.freeze("old", "c")
    shard.link("email_hash:y", "other")
    assert shard.forget_identity("c") == ["old"]  # merged into c: the caller forgets it too
    assert shard.aliases == {"email_hash:y": "other"} and shard.forwards == {}
    assert set(shard.book.owed) == {"email_hash:y"}  # merges into c are not owed any more
    shard.link("cookie_id:z", "gone")
    shard.erase_profile("gone")
    shard.forget_identity("gone")  # (the ingress calls it on every shard)
    assert "cookie_id:z" not in shard.aliases


def test_identity_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown identifier kinds: device_id"):
        config_from_dict(
            {**SMALL, "identity": {"kinds": ["cookie_id"], "links": {"login": ["device_id"]}}}
        )


def test_erasing_the_survivor_erases_what_was_merged_into_it(tmp_path: Path) -> None:
    a = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path))
    a.decide({"customer_id": "old", "channel": "web"})
    _merge(a, a, "old", "new")
    a.erase_profile("new")
    assert a.forget_identity("new") == ["old"]
    assert not [r for r in a.decisions.values() if r.customer_id in ("old", "new")]
    a.flush()
    again = Shard(0, _config(), clock=Clock(), log_dir=str(tmp_path))
    assert again.state_digest() == a.state_digest()
    assert "old" not in again.store.ids


def test_the_merge_steps_refuse_what_could_close_a_cycle() -> None:
    """decisioning/profile/identity.py: a pointer is only made into a pinned survivor, and a
    pinned survivor is never frozen."""
    shard = Shard(0, _config(), clock=Clock())
    shard.pin("s", "t1", "m")
    with pytest.raises(MergeBusy):  # s is the survivor of a merge in flight
        shard.freeze("s", "other", "t2")
    first = shard.freeze("m", "s", "t1")
    assert shard.freeze("m", "s", "t1")["merge_id"] == first["merge_id"]  # a repeat
    assert shard.freeze("m", "s", "t9")["merge_id"] == first["merge_id"]  # another finisher
    with pytest.raises(AlreadyMerged) as e:
        shard.freeze("m", "other", "t3")
    assert e.value.target == "s"
    with pytest.raises(Moved):  # a survivor merged away is never pinned
        shard.pin("m", "t4", "x")
    # a stale attempt called off before it froze cannot freeze afterwards ...
    shard.pin("s", "t5", "late")
    assert shard.cancel_merge("late", "s", "t5") == {"frozen": False, "owed": False}
    with pytest.raises(MergeBusy):
        shard.freeze("late", "s", "t5")
    # ... and one that froze is finished, not called off
    assert shard.cancel_merge("m", "s", "t1") == {"frozen": True, "owed": True}
    assert shard.freeze("m", "s", "t1")["merge_id"] == first["merge_id"]
    # a pointer moves only to the end of its own chain, and not while its merge is owed
    assert shard.compress("m", "s", "z") is False
    shard.drop_merged("m")
    assert shard.compress("m", "elsewhere", "z") is False
    assert shard.compress("m", "s", "z") is True and shard.forwards["m"] == "z"
