"""The client puts every customer in the slot the server does (decisioning's slot_of
over the id as serving/wire.py normalises it), and reads the slot out of a decision id
as the server does: otherwise a routed request would be refused 421 forever."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from decisioning.errors import NotFound
from decisioning.profile import slots as server
from nextbest_client import SLOTS, SlotMap, decision_slot, slot_of
from serving.wire import DecideIn, WireError, validate
from tests.conftest import examples


def server_slot(customer_id: str) -> int | None:
    """The slot the server routes a body's customer id to (None: it refuses the id)."""
    try:
        cid = validate(DecideIn, {"customer_id": customer_id, "channel": "web"}).customer_id
    except WireError:
        return None
    return server.slot_of(cid)


IDS = [
    "c-42", "c-0", "", "x" * 128, "email_hash:ab12", "cookie_id:abc", "Zoë", "zoë",
    "café", "cafe\u0301", "\u212b", "\u00c5", "A\u030a", "한국어", "\u1100\u1161\u11a8",
    "日本語-顧客", "emoji-😀", "ﬁ-ligature", "\u1e9b\u0323", "Ω", "\u2126", "ăâ",
    "a\u0328\u0301", "🇫🇷", "ß", "ẞ", " leading", "trailing ", "tab-less",
]  # fmt: skip


def test_the_slot_of_every_id_is_the_servers() -> None:
    checked = 0
    for cid in IDS + [f"c-{i}" for i in range(2000)] + [f"ü-{i}" for i in range(500)]:
        expected = server_slot(cid)
        if expected is None:
            continue
        assert slot_of(cid) == expected, cid
        checked += 1
    assert checked > 2400


def test_ids_that_differ_only_by_normal_form_share_a_slot() -> None:
    for a, b in [("café", "cafe\u0301"), ("\u00c5", "A\u030a"), ("\u00c5", "\u212b"),
                 ("\uac01", "\u1100\u1161\u11a8"), ("\u1e9b\u0323", "\u1e9b\u0323")]:  # fmt: skip
        assert unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b)
        assert slot_of(a) == slot_of(b) == server_slot(a) == server_slot(b), (a, b)
    assert slot_of("café") != server.slot_of("cafe\u0301")  # the raw bytes would differ


@given(st.text(min_size=1, max_size=40))
@examples(400)
def test_any_id_the_server_accepts_is_in_the_servers_slot(cid: str) -> None:
    expected = server_slot(cid)
    if expected is not None:
        assert slot_of(cid) == expected


@given(st.text(alphabet=st.characters(categories=["L", "M", "N"]), min_size=1, max_size=12))
@examples(300)
def test_every_normal_form_of_an_id_is_in_the_servers_slot(cid: str) -> None:
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        other = unicodedata.normalize(form, cid)
        expected = server_slot(other)
        if expected is not None:
            assert slot_of(other) == expected, (form, other)


def test_a_decision_id_names_its_customers_slot_as_the_server_reads_it() -> None:
    for cid in IDS[:10] + [f"c-{i}" for i in range(200)]:
        did = f"d-{slot_of(cid):04x}-b838d336d545ef51"
        assert decision_slot(did) == server.decision_slot(did) == slot_of(cid)
    for bad in ("d-zzzz-1", "x-0001-1", "d-001-1", "d-0001", "d-0001-a-b", "", "d-ffff-1"):
        assert decision_slot(bad) is None, bad
        if bad != "d-ffff-1":  # (the server reads 0xffff; no customer has that slot)
            try:
                server.decision_slot(bad)
            except NotFound:
                continue
            raise AssertionError(f"the server reads a slot in {bad!r}")


def test_the_map_gives_each_slot_its_shard_and_endpoint() -> None:
    m = SlotMap.from_wire(
        {"epoch": 3, "slots": [[0, 8191, 0], [8192, SLOTS - 1, 1]],
         "shards": [{"shard": 0, "endpoint": "http://a:1"}, {"shard": 1, "endpoint": None}]}
    )  # fmt: skip
    assert m.epoch == 3
    assert (m.shard_of(0), m.shard_of(8191), m.shard_of(8192), m.shard_of(SLOTS - 1)) == (
        0, 0, 1, 1,
    )  # fmt: skip
    assert m.endpoint_of(5) == "http://a:1" and m.endpoint_of(9000) is None
