"""A queued message holds a typed record of its decision, not the /v1/decide answer: the
answer is built when the message is leased, and messages stored the old way (the answer
itself, in WAL records and snapshots) still read, and lease, as they did."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from decisioning.delivery.outbox import Message, Outbox, QueuedDecision
from decisioning.journal import snapshot
from decisioning.policy.decide import ChannelChoice, Decision, ScoredAction

NOW = 1_700_000_000.0
CHOICE = ChannelChoice(
    "email", "preferred", {"email": {"action_id": "a", "priority": 5.0, "cost": 0.1}}
)
DECISION = Decision(
    "d-0001-00",
    "c",
    NOW,
    "email",
    "hero",
    [ScoredAction("a", "g", "email", 0.5, 10.0, 2.0, 0.5, 5.0, "m@1")],
    candidates=3,
    eligible=1,
    model_versions=["m@1"],
)
# what /v1/decide answered for DECISION (and what older shards stored in a message)
WIRE = {
    **DECISION.to_wire(),
    "variant": "challenger",
    "channel_choice": CHOICE.to_wire(),
}


def test_a_message_is_leased_with_the_answer_its_decision_gave() -> None:
    queued = QueuedDecision.of(DECISION, "challenger", CHOICE)
    m = Message(DECISION.decision_id, "c", "email", "cart", NOW + 1, queued)
    wire = m.to_wire("token")
    assert wire["decision"] == WIRE and wire["actions"] == WIRE["actions"]
    assert (wire["id"], wire["idempotency_key"], wire["open_token"]) == (m.id, m.id, "token")
    assert wire["queued_at"] == NOW + 1 and wire["trigger"] == "cart"
    assert not any(isinstance(v, dict) for v in m.row()[5])  # stored typed, not as the answer
    assert Message.of(m.row()) == m


def test_a_message_stored_as_the_answer_reads_as_the_same_message() -> None:
    queued = QueuedDecision.of(DECISION, "challenger", CHOICE)
    typed = Message(DECISION.decision_id, "c", "email", "cart", NOW, queued)
    old = Message.of([DECISION.decision_id, "c", "email", "cart", NOW, WIRE])
    assert old == typed
    without_choice = {k: v for k, v in WIRE.items() if k != "channel_choice"}
    m = Message.of(["d-0001-00", "c", "email", "cart", NOW, without_choice])
    assert m.decision.channel_choice is None and m.to_wire()["decision"] == without_choice


def test_snapshots_with_messages_stored_either_way_load(tmp_path: Path) -> None:
    typed = Message.of([DECISION.decision_id, "c", "email", "cart", NOW, WIRE])
    wire2 = {**WIRE, "decision_id": "d-0002-00", "customer_id": "c2"}
    rows = [["d-0002-00", "c2", "email", "cart", NOW, wire2], typed.row()]  # old, new
    state = snapshot.State(
        wal_seq=1,
        layout_key="k",
        id_blob=b"",
        id_ends=np.zeros(0, dtype=np.int64),
        matrices={},
        outbound=rows,
    )
    path = snapshot.write(str(tmp_path), state)
    back = snapshot.read(str(tmp_path), Path(path).name, "k")
    outbox = Outbox(10)
    for row in back.outbound:
        outbox.add(Message.of(row))
    leased = outbox.lease("email", 10, NOW, 60.0)
    assert [m.to_wire()["decision"] for m in leased] == [wire2, WIRE]
