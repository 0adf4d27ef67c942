from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decisioning.profile.ids import IdIndex


class Colliding(IdIndex):
    """Every id hashes to one of four values: probing and the byte comparison decide."""

    _hash = staticmethod(lambda key: len(key) % 4)


ids = st.lists(st.text(min_size=0, max_size=12), max_size=200)


@given(ids)
def test_behaves_like_a_dict(customers: list[str]) -> None:
    for index in (IdIndex(capacity=1), Colliding(capacity=1)):
        expected: dict[str, int] = {}
        for c in customers:
            if index.get(c) is None:
                expected[c] = index.add(c)
            assert index.get(c) == expected[c]
        assert len(index) == len(expected)
        assert all(index.get(c) == r for c, r in expected.items())
        assert list(index) == list(expected)  # row order, ids decoded back
        assert all(index.id_of(r) == c for c, r in expected.items())
        assert index.get("never-added-\u00e9") is None or "never-added-\u00e9" in expected


def test_grows_and_keeps_every_row() -> None:
    index = IdIndex(capacity=4)
    for i in range(100_000):
        assert index.add(f"customer-{i}") == i
    assert all(index.get(f"customer-{i}") == i for i in range(0, 100_000, 7))
    assert index.get("customer-100000") is None
    assert "customer-99999" in index and 42 not in index
    assert index.nbytes() < 60 * len(index)  # a dict of str would hold ~125 bytes per id


@given(ids)
def test_rebuilt_from_its_buffers_finds_every_id(customers: list[str]) -> None:
    for cls in (IdIndex, Colliding):
        index = cls(capacity=1)
        for c in dict.fromkeys(customers):
            index.add(c)
        rebuilt = cls.from_buffers(*index.buffers())
        assert list(rebuilt) == list(index)
        assert all(rebuilt.get(c) == index.get(c) for c in customers)
        assert rebuilt.get("never-added-\u00e9") is None
        if rebuilt.get("new-one") is None:
            assert rebuilt.add("new-one") == len(index)  # and it keeps growing


def test_inconsistent_buffers_are_refused() -> None:
    index = IdIndex()
    for c in ("a", "bb", "ccc"):
        index.add(c)
    blob, ends = index.buffers()
    with pytest.raises(ValueError, match="inconsistent"):
        IdIndex.from_buffers(blob[:-1], ends)
    with pytest.raises(ValueError, match="inconsistent"):
        IdIndex.from_buffers(blob, ends[::-1].copy())


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=300))
def test_add_and_remove_behave_like_a_dict(ops: list[tuple[bool, int]]) -> None:
    for cls in (IdIndex, Colliding):
        index = cls(capacity=1)
        expected: dict[str, int] = {}
        for add, n in ops:
            c = f"<c{n}>"
            if add and c not in expected:
                expected[c] = index.add(c)
            elif not add:
                assert index.remove(c) == expected.pop(c, None)
            assert all(index.get(k) == r for k, r in expected.items())
            assert index.get(c) == expected.get(c)
        assert len(index) == len(expected) and list(index) == list(expected)
        blob, ends = index.buffers()  # what a snapshot holds: the ids left, nothing else
        rebuilt = cls.from_buffers(blob, ends)
        assert list(rebuilt) == list(expected)
        for gone in {f"<c{n}>" for _, n in ops} - set(expected):
            assert gone.encode() not in blob


def test_removed_ids_leave_no_bytes_behind() -> None:
    index = IdIndex()
    for c in ("alice@example.com", "bob", "carol"):
        index.add(c)
    assert index.remove("alice@example.com") == 0
    assert index.remove("alice@example.com") is None
    assert b"alice" not in index._blob and index.get("bob") == 1
    live = index.live_rows()
    assert live is not None and live.tolist() == [1, 2]
