"""The WAL's named record types: each round-trips through msgpack, the one-letter tags
older shards wrote still decode to the same types, and no tag is ever reused."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from decisioning.delivery.outbox import Message, QueuedAction, QueuedDecision
from decisioning.journal import records as rec
from decisioning.policy.decide import ChannelChoice
from decisioning.profile import Event
from decisioning.profile.identity import Book
from tests.conftest import examples

ids = st.text(min_size=1, max_size=12)
maybe_id = st.none() | ids
ts = st.floats(0, 2e9, allow_nan=False)
props = st.dictionaries(ids, st.none() | st.integers(-(2**63), 2**64 - 1) | ts | ids, max_size=3)
events = st.builds(Event, ids, ids, ts, props, maybe_id)
action = st.builds(QueuedAction, ids, ids, ids, ts, ts, ts, maybe_id)
choice = st.builds(
    ChannelChoice,
    ids,
    st.sampled_from(["preferred", "best net priority"]),
    st.dictionaries(ids, st.fixed_dictionaries({"cost": ts}), max_size=2),
)
queued = st.builds(
    QueuedDecision,
    ids,
    ids,
    ts,
    ids,
    maybe_id,
    maybe_id,
    st.lists(action, max_size=3).map(tuple),
    st.sampled_from(["champion", "challenger", "explore"]),
    st.none() | choice,
)
message = st.builds(Message, ids, ids, ids, ids, ts, queued)
RECORDS = st.one_of(
    st.builds(rec.EventsApplied, st.lists(events, max_size=3)),
    st.builds(
        rec.DecisionMade,
        ids,
        ids,
        st.lists(ids, max_size=3).map(tuple),
        ts,
        ids,
        maybe_id,
        maybe_id,
    ),
    st.builds(  # made under a request id: its key and the rest of the answer
        rec.DecisionMade,
        ids,
        ids,
        st.lists(ids, max_size=3).map(tuple),
        ts,
        ids,
        maybe_id,
        maybe_id,
        st.binary(min_size=16, max_size=16),
        st.lists(st.none() | ids | ts | st.lists(ts, max_size=2) | props, max_size=6),
    ),
    *(st.builds(t, ids) for t in (rec.ProfileErased, rec.ErasedWithIdentity)),
    *(st.builds(t, ids) for t in (rec.IdentityForgotten, rec.MergedRowDropped)),
    st.builds(rec.TimerSet, ids, ids, ts, ts),
    st.builds(rec.TimerCleared, ids, ids),
    st.builds(rec.Queued, message),
    st.builds(rec.Acked, st.lists(ids, max_size=3).map(tuple)),
    st.builds(rec.Linked, ids, maybe_id),
    st.builds(rec.Forwarded, ids, maybe_id),
    st.builds(rec.Owed, ids, st.none()),
    st.builds(rec.Owed, ids, ids, ids, maybe_id),
    st.builds(rec.Pinned, ids, ids, ids, ts),
    st.builds(rec.Unpinned, ids, ids),
    st.builds(rec.Cancelled, ids, ts),
    st.builds(rec.Absorbed, ids, ts),
    st.builds(
        rec.Folded,
        ids,
        ids,
        st.none() | st.lists(st.binary(max_size=8), min_size=4, max_size=4),
        st.lists(st.lists(ids, max_size=2), max_size=2),
        st.none() | ts,
    ),
    st.builds(
        rec.SlotsAbsorbed,
        ids,
        st.integers(0, 16383),
        st.integers(1, 16384),
        st.dictionaries(ids, st.lists(ids, max_size=2) | st.binary(max_size=8), max_size=3),
        st.integers(0, 9),
    ),
    st.builds(rec.SlotsDropped, ids, st.integers(0, 16383), st.integers(1, 16384)),
)


def _through_msgpack(row: list[Any]) -> Any:
    """As the WAL stores and reads a row."""
    return msgpack.unpackb(msgpack.packb(row, use_bin_type=True), raw=False, strict_map_key=False)


@examples(300)
@given(record=RECORDS)
def test_every_record_round_trips_under_its_named_tag(record: rec.Record) -> None:
    row = _through_msgpack(rec.encode(record))
    assert row[0] == type(record).TAG
    assert rec.decode(row) == record


def test_a_decision_without_a_request_id_is_written_as_before() -> None:
    """Seven items, as every shard before request ids wrote and read them."""
    r = rec.DecisionMade("d-0001-00", "c", ("a",), 1.5, "web", None, None)
    assert rec.encode(r) == ["decision", ["d-0001-00", "c", ["a"], 1.5, "web", None, None]]


def test_every_record_type_has_its_own_tag_and_no_tag_is_reused() -> None:
    tags = [t.TAG for t in rec._TYPES]
    assert len(set(tags)) == len(tags)
    assert set(rec.LEGACY).isdisjoint(rec.TAGS)  # an old tag never gets a new meaning
    assert rec.decode(["a-tag-from-a-newer-shard", []]) is None


NOW = 1_700_000_000.0
QUEUED_WIRE = {
    "decision_id": "d-0001-00",
    "customer_id": "c",
    "ts": NOW,
    "channel": "email",
    "placement": None,
    "model_version": "m@1",
    "actions": [
        {
            "action_id": "a",
            "group": "g",
            "channel": "email",
            "propensity": 0.5,
            "value": 10.0,
            "priority": 5.0,
            "model_version": "m@1",
        }
    ],
    "variant": "champion",
    "channel_choice": {"channel": "email", "reason": "preferred", "channels": {}},
}
# Rows exactly as shards before the named records wrote them, and what they mean.
LEGACY_ROWS: list[tuple[list[Any], rec.Record]] = [
    (
        ["e", [["c", "page_view", NOW, {"page": "x"}, "e1"], ["c", "login", NOW, None, None]]],
        rec.EventsApplied(
            [Event("c", "page_view", NOW, {"page": "x"}, "e1"), Event("c", "login", NOW, {}, None)]
        ),
    ),
    (
        ["d", ["d-0001-00", "c", ["a", "b"], NOW, "web", None, "m@1"]],
        rec.DecisionMade("d-0001-00", "c", ("a", "b"), NOW, "web", None, "m@1"),
    ),
    (  # (the named tag, as written before a decision could carry a request id)
        ["decision", ["d-0001-00", "c", ["a"], NOW, "web", "hero", None]],
        rec.DecisionMade("d-0001-00", "c", ("a",), NOW, "web", "hero", None, None, None),
    ),
    (["x", "c"], rec.ErasedWithIdentity("c")),
    (["erase", "c"], rec.ProfileErased("c")),
    (["X", "c"], rec.IdentityForgotten("c")),
    (["D", "c"], rec.MergedRowDropped("c")),
    (["T", ["c", "t", NOW + 60, NOW]], rec.TimerSet("c", "t", NOW + 60, NOW)),
    (["T", ["c", "t", None, None]], rec.TimerCleared("c", "t")),
    (["L", ["cookie_id:a", "c"]], rec.Linked("cookie_id:a", "c")),
    (["F", ["m", "s"]], rec.Forwarded("m", "s")),
    (["M", ["s", "mid", None, [], NOW]], rec.Folded("s", "mid", None, [], NOW)),
    (["M", ["s", "mid", None, []]], rec.Folded("s", "mid", None, [])),  # before ts was kept
    (["k", ["d-0001-00"]], rec.Acked(("d-0001-00",))),
    (["owe", ["m", None]], rec.Owed("m", None)),
    (["pin", ["s", "t1", "m", NOW]], rec.Pinned("s", "t1", "m", NOW)),
]


def test_the_tags_older_shards_wrote_decode_to_the_same_types() -> None:
    for row, expected in LEGACY_ROWS:
        assert rec.decode(_through_msgpack(row)) == expected, row


def test_a_queued_message_stored_as_the_wire_answer_reads_as_the_typed_record() -> None:
    """Older shards stored the /v1/decide answer itself in the message; it reads as the
    typed record, and the wire answer built from that is the one that was stored."""
    row = ["d-0001-00", "c", "email", "cart", NOW, QUEUED_WIRE]
    record = rec.decode(_through_msgpack(["o", row]))
    assert isinstance(record, rec.Queued)
    m = record.message
    assert m.decision.actions[0].action_id == "a" and m.decision.channel_choice is not None
    assert m.to_wire("tok")["decision"] == QUEUED_WIRE
    assert m.to_wire("tok")["actions"] == QUEUED_WIRE["actions"]
    assert Message.of(_through_msgpack(m.row())) == m  # and its new form round-trips


def test_identity_changes_go_through_the_book_unchanged() -> None:
    """The book's changes become named records and back, applied by the same code."""
    book, replayed = Book(), Book()
    changes = book.link("cookie_id:a", "c")
    changes += book.pin("c", "t1", "m", NOW)
    changes += book.freeze("m", "c", "t1", "merge")[0]
    changes += book.settle("m") + book.unpin("c", "t1") + book.cancel("x", "c", "t2", NOW)
    assert {k for k, _ in changes} == {"L", "owe", "pin", "F", "unpin", "cancel"}
    for change in changes:
        row = _through_msgpack(rec.encode(rec.from_book(change)))
        record = rec.decode(row)
        assert record is not None and not isinstance(record, rec.Folded)
        replayed.apply(rec.to_book(record))  # type: ignore[arg-type]
    assert replayed.digest() == book.digest()
