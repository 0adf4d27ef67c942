"""Recovery from a WAL written with the one-letter tags of shards before the named
records: the same state as then, and the same state as the new records give.

`fixtures/legacy_wal/` is a data directory the shard of commit d49c405 wrote: `run()`
below, then `shard.wal.append(("x", "c5"))` (an erasure as still older shards logged
it), then `close()` without a snapshot. `fixtures/legacy_wal.expected.json` is
`observe()` of a shard that d49c405 recovered from a copy of it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from actors.messages import (
    Absorb,
    CancelMerge,
    Compress,
    DropMerged,
    ForgetIdentity,
    Freeze,
    IdentityOf,
    Link,
    Pin,
    Resolve,
    UnfinishedMerges,
    Unpin,
)
from actors.shard import Shard
from decisioning.config.loader import config_from_dict
from decisioning.errors import NextbestError
from decisioning.journal import records as rec
from decisioning.journal.wal import Replay, replay, segments
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

CONFIG = config_from_dict(
    {
        **SMALL,
        "actions": [
            *SMALL["actions"],
            {"id": "cart_reminder", "group": "cart", "channels": ["email"], "value": 10},
        ],
        "triggers": [
            {
                "id": "cart_abandoned",
                "event": "cart_add",
                "not_followed_by": ["purchase"],
                "within": "30m",
                "channel": "email",
            },
            {"id": "moved", "event": "address_change", "channel": "email"},
            {"id": "nudge", "event": "nudge", "channel": "outbound"},
        ],
        "identity": {"kinds": ["cookie_id", "email_hash"], "links": {"login": ["cookie_id"]}},
        "decisioning": {
            **SMALL["decisioning"],
            "channel_caps": {"web": {"per_day": 5}},
            "outbound": {"channels": ["email", "web"], "costs": {"email": 0.1, "web": 0.0}},
        },
    }
)
CUSTOMERS = ["c1", "c2", "c3", "c5", "cookie_id:a", "old", "gone"]


def ev(cid: str, kind: str, ts: float, event_id: str | None = None, **props: Any) -> dict[str, Any]:
    return {"customer_id": cid, "type": kind, "ts": ts, "properties": props, "event_id": event_id}


def run(shard: Shard, clock: Clock) -> None:
    """Every kind of record the shard writes."""
    edge.apply_events(
        shard,
        [
            ev("c1", "profile_update", NOW, "u1", age=30, segment="affluent"),
            ev("c1", "page_view", NOW, "v1", page="cards"),
            ev("c1", "page_view", NOW, "v1", page="cards"),  # a retry
            ev("c2", "profile_update", NOW, None, age=40),
            ev("c2", "purchase", NOW, "p1", amount=12.5),
            ev("c3", "page_view", NOW, None),
            ev("c5", "page_view", NOW, None),
        ],
    )
    d1 = edge.decide(shard, {"customer_id": "c1", "channel": "web", "limit": 2})
    edge.decide(shard, {"customer_id": "c2", "channel": "web"})
    edge.decide(shard, {"customer_id": "c3", "channel": "web"})
    edge.record_outcomes(
        shard,
        [
            {
                "decision_id": d1["decision_id"],
                "action_id": d1["actions"][0]["action_id"],
                "outcome": "click",
            }
        ],
    )
    clock.t = NOW + 60
    edge.apply_events(shard, [ev("c1", "cart_add", clock.t), ev("c2", "cart_add", clock.t)])
    edge.apply_events(shard, [ev("c2", "purchase", clock.t + 1, amount=3.0)])  # clears its timer
    clock.t = NOW + 60 + 31 * 60
    shard.tick()  # c1's timer fires
    edge.apply_events(shard, [ev("c2", "address_change", clock.t), ev("c1", "nudge", clock.t)])
    edge.apply_events(shard, [ev("c3", "address_change", clock.t)])
    leased = edge.lease_outbound(shard, "email", 1)
    edge.ack_outbound(shard, [m["id"] for m in leased])
    # identity: a link owes a merge; pin, freeze, absorb, drop, unpin
    edge.apply_events(shard, [ev("cookie_id:a", "page_view", clock.t, "ca")])
    shard.link(Link("cookie_id:a", "c1"))
    shard.pin(Pin("c1", "t1", "cookie_id:a"))
    frozen = shard.freeze(Freeze("cookie_id:a", "c1", "t1"))
    shard.absorb(Absorb("c1", frozen.merge_id, frozen.state, frozen.contacts))
    shard.drop_merged(DropMerged("cookie_id:a"))
    shard.unpin(Unpin("c1", "t1"))
    shard.pin(Pin("c2", "t9", "late"))
    shard.cancel_merge(CancelMerge("late", "c2", "t9"))
    edge.decide(shard, {"customer_id": "old", "channel": "web"})
    fr = shard.freeze(Freeze("old", "mid"))
    shard.absorb(Absorb("mid", fr.merge_id, fr.state, fr.contacts))
    shard.drop_merged(DropMerged("old"))
    fr = shard.freeze(Freeze("mid", "c2"))
    shard.absorb(Absorb("c2", fr.merge_id, fr.state, fr.contacts))
    shard.drop_merged(DropMerged("mid"))
    shard.compress(Compress("old", "mid", "c2"))
    # erasures: the profile (erase), the identity (X), and x as older shards wrote it
    edge.erase_profile(shard, "c3")
    shard.link(Link("email_hash:z", "gone"))
    edge.apply_events(shard, [ev("gone", "page_view", clock.t)])
    shard.forget_identity(ForgetIdentity("gone"))
    edge.erase_profile(shard, "gone")


def observe(shard: Shard) -> dict[str, Any]:
    """What a user (and the next snapshot) would see of the shard, as JSON."""
    out: dict[str, Any] = {}
    for c in CUSTOMERS:
        try:
            view = edge.get_profile(shard, c)
        except NextbestError as e:
            view = {"error": type(e).__name__, "message": str(e)}
        out[f"profile {c}"] = view
        out[f"identity {c}"] = asdict(shard.identity_of(IdentityOf(c)))
        out[f"resolve {c}"] = asdict(shard.resolve(Resolve(c)))
    out["identity rows"] = sorted(map(list, shard.book.rows()), key=repr)
    out["decisions"] = [[k, list(v)] for k, v in shard.decisions.items()]
    out["seen"] = [k.hex() for k in shard.seen]
    out["contacts"] = sorted(map(list, shard.contacts.rows()), key=repr)
    out["timers"] = sorted(map(list, shard.timers.rows()))
    out["counters"] = dict(shard.counters)
    out["variant_stats"] = shard.variant_stats
    out["customers"] = sorted(shard.store.ids)
    out["unfinished"] = [u._asdict() for u in shard.unfinished_merges(UnfinishedMerges(0.0))]
    out["outbound_status"] = shard.outbound_status()
    out["leased"] = {ch: edge.lease_outbound(shard, ch, 10) for ch in ("email", "web")}
    return out


def _json(observed: dict[str, Any]) -> Any:
    """As JSON, with each decision id (random) replaced by its slot and its order, and
    the idempotency keys counted (an outcome's key is a digest of its decision id)."""
    text = json.dumps({**observed, "seen": len(observed["seen"])}, sort_keys=True, default=repr)
    order: dict[str, str] = {}
    for m in re.finditer(r"d-([0-9a-f]{4})-[0-9a-f]{16}", text):
        order.setdefault(m.group(0), f"d-{m.group(1)}-{len(order)}")
    return json.loads(re.sub(r"d-[0-9a-f]{4}-[0-9a-f]{16}", lambda m: order[m.group(0)], text))


def _tags(directory: Path) -> set[str]:
    d = str(directory)
    files = [(f, (directory / f).stat().st_size) for *_, f in segments(d)]
    return {row[0] for row in replay(d, files, Replay())}


def test_a_wal_with_the_old_tags_recovers_as_it_did(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "legacy_wal", tmp_path / "old")
    assert {"e", "d", "x", "erase", "X", "D", "T", "L", "F", "M", "o", "k"} <= _tags(
        tmp_path / "old"
    )
    clock = Clock()
    shard = Shard(0, CONFIG, clock=clock, log_dir=str(tmp_path / "old"))
    clock.t = NOW + 60 + 31 * 60  # when the fixture was observed
    expected = json.loads((FIXTURES / "legacy_wal.expected.json").read_text())
    expected["counters"]["decisions_repeated"] = 0  # (a counter added since: none repeated)
    assert json.loads(json.dumps(observe(shard), sort_keys=True, default=repr)) == expected


def test_the_named_records_recover_to_the_same_state(tmp_path: Path) -> None:
    """The same run under this code writes only named tags, and recovers to the state
    the old tags recovered to (decision ids aside: they are random)."""
    clock = Clock()
    live = Shard(0, CONFIG, clock=clock, log_dir=str(tmp_path / "new"))
    run(live, clock)
    live.journal.log(rec.ErasedWithIdentity("c5"))  # (the fixture's hand-written x)
    live.close()
    assert _tags(tmp_path / "new") <= set(rec.TAGS)  # no legacy tag written
    back = Shard(0, CONFIG, clock=clock, log_dir=str(tmp_path / "new"))
    expected = json.loads((FIXTURES / "legacy_wal.expected.json").read_text())
    expected["counters"]["decisions_repeated"] = 0  # (a counter added since: none repeated)
    assert _json(observe(back)) == _json(expected)


def test_every_record_type_has_a_replay_handler() -> None:
    assert set(Shard(0, CONFIG).journal.handlers) == set(rec._TYPES)
