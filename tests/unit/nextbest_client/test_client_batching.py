"""The producer's batches: full or lingered batches leave, one per owner at a time, in
the order their events came; a flush takes everything that waits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nextbest_client.batching import Batches
from tests.conftest import examples


def test_a_batch_leaves_when_full_or_lingered() -> None:
    b: Batches[str, int] = Batches(linger_s=0.25, batch_size=3)
    assert not b.add("a", 1, 0.0) and not b.add("a", 2, 0.0)
    assert b.take(0.125) == []
    assert b.next_due() == 0.25
    assert b.add("a", 3, 0.125)  # full: worth a wake-up
    assert b.take(0.125) == [("a", [1, 2, 3])]
    b.add("b", 4, 0.5)
    assert b.take(0.625) == [] and b.take(0.75) == [("b", [4])]


def test_one_batch_per_owner_in_flight() -> None:
    b: Batches[str, int] = Batches(linger_s=0.0, batch_size=2)
    for i in range(5):
        b.add("a", i, 0.0)
    b.add("b", 9, 0.0)
    assert b.take(1.0) == [("a", [0, 1]), ("b", [9])]
    assert b.take(2.0) == [] and b.next_due() is None  # a's next waits for its answer
    b.done("a")
    assert b.take(2.0) == [("a", [2, 3])]
    b.done("a")
    b.done("b")
    assert not b.idle and b.take(2.0) == [("a", [4])]
    b.done("a")
    assert b.idle and b.queues == {}


def test_a_flush_takes_what_has_not_lingered_yet() -> None:
    b: Batches[str, int] = Batches(linger_s=60.0, batch_size=100)
    b.add("a", 1, 0.0)
    b.add("b", 2, 0.0)
    assert b.take(1.0) == []
    assert b.take(1.0, flush=True) == [("a", [1]), ("b", [2])]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=60),
       st.integers(1, 5))  # fmt: skip
@examples(200)
def test_every_item_leaves_once_in_its_owners_order(ops: list[tuple[str, bool]], size: int) -> None:
    b: Batches[str, int] = Batches(linger_s=0.5, batch_size=size)
    sent: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    now = 0.0
    for i, (key, answer) in enumerate(ops):
        now += 0.1
        b.add(key, i, now)
        for k, batch in b.take(now):
            assert len(batch) <= size
            sent[k] += batch
            if answer:
                b.done(k)
        for k in list(b.in_flight):
            if answer:
                b.done(k)
    while not b.idle:
        for k in list(b.in_flight):
            b.done(k)
        for k, batch in b.take(now, flush=True):
            sent[k] += batch
    for k in "abc":
        assert sent[k] == [i for i, (key, _) in enumerate(ops) if key == k]
