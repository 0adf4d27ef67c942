"""The identity book's records: each is the book's change and back, and the WAL knows
each under its own tag."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from decisioning.journal import identity_records as idr
from decisioning.journal import records as rec
from tests.conftest import examples

ids = st.text(min_size=1, max_size=12)
maybe_id = st.none() | ids
ts = st.floats(0, 2e9, allow_nan=False)
IDENTITY_RECORDS = st.one_of(
    st.builds(idr.Linked, ids, maybe_id),
    st.builds(idr.Forwarded, ids, maybe_id),
    st.builds(idr.Owed, ids, st.none()),
    st.builds(idr.Owed, ids, ids, ids, maybe_id),
    st.builds(idr.Pinned, ids, ids, ids, ts),
    st.builds(idr.Unpinned, ids, ids),
    st.builds(idr.Cancelled, ids, ts),
    st.builds(idr.Absorbed, ids, ts),
)


@examples(200)
@given(record=IDENTITY_RECORDS)
def test_a_record_is_the_books_change_and_back(record: idr.IdentityRecord) -> None:
    kind, body = idr.to_book(record)
    assert kind == type(record).BOOK
    assert idr.from_book((kind, body)) == record


def test_every_identity_record_is_a_wal_record_with_its_own_book_kind() -> None:
    books = [t.BOOK for t in idr.IDENTITY]
    assert len(set(books)) == len(books)
    assert {t.TAG for t in idr.IDENTITY} <= set(rec.TAGS)
    assert set(idr.IDENTITY) <= set(rec._TYPES)
