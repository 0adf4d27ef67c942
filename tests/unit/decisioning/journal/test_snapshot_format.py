"""The snapshot format on disk: a snapshot the code of commit e18cc16 wrote reads back as
the state it was written from, the same state is written to the same files again (and
one more, answers.arrow, since format 4), a snapshot without the files older shards did
not write reads with those parts empty, and any state round-trips.

`fixtures/snapshot_e18cc16/` is `snapshot.write(dir, STATE, generation=3)` as the code
of commit e18cc16 (pyarrow 26.0.1) ran it, before `write` and `read` were cut into one
step per file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from decisioning.journal import snapshot
from tests.conftest import examples

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "snapshot_e18cc16"
NAME = "snapshot-000000000007-g000003"
FILES = (
    "profiles.arrow",
    "decisions.arrow",
    "seen.arrow",
    "contacts.arrow",
    "timers.arrow",
    "outbound.arrow",
    "identity.arrow",
)
ADDED = ("answers.arrow",)  # files written since the fixture: format 4
WRITTEN_WITH = "26.0.1"  # the fixture's pyarrow: another may lay the same bytes out otherwise

_IDS = ["c1", "cé2", "cookie_id:a"]
STATE = snapshot.State(
    wal_seq=7,
    layout_key="layout-k",
    id_blob="".join(_IDS).encode(),
    id_ends=np.cumsum([len(i.encode()) for i in _IDS]).astype(np.uint64),
    matrices={
        "f32": np.array([[1.5, math.nan], [85.4, 0.0], [-1.0, 2.0]], dtype=np.float32),
        "f64": np.array([[1e300], [math.nan], [-0.5]], dtype=np.float64),
        "i32": np.arange(6, dtype=np.int32).reshape(3, 2),
        "u16": np.empty((3, 0), dtype=np.uint16),
    },
    decisions=[
        ("d-0001-00", ("c1", ("a", "b"), 100.5, "web", None, "propensity@3")),
        ("d-0002-00", ("cé2", (), 101.0, "email", "hero", None)),
    ],
    seen=[bytes(range(16)), b"\xff" * 16],
    counters={"events": 12, "decisions": 2},
    contacts=[("c1", 100.5, "a", "shown", "web"), ("cé2", 99.0, "b", "sent", "email")],
    timers=[("c1", "cart_abandoned", 1900.0, 100.0)],
    outbound=[
        ["d-0003-00", "c1", "email", "cart_abandoned", 102.0, {"decision_id": "d-0003-00"}],
        ["d-0004-00", "cé2", "email", "moved", 103.0, {"v": 2, "actions": [["a", 0.5]]}],
    ],
    identity=[
        ("alias", "cookie_id:a", "c1", None, None, None),
        ("forward", "old", "c1", None, None, None),
        ("owed", "x", "c1", "login", "m-1", None),
        ("pin", "c1", "x", None, "tok", 50.0),
        ("cancelled", "tok2", None, None, None, 51.0),
        ("absorbed", "m-0", None, None, None, 52.0),
    ],
)


def _same(a: snapshot.State, b: snapshot.State) -> None:
    """Assert two states are equal (arrays compared by dtype, shape and bits, NaN too)."""
    assert (a.wal_seq, a.layout_key, a.id_blob) == (b.wal_seq, b.layout_key, b.id_blob)
    assert a.id_ends.tolist() == b.id_ends.tolist()
    assert sorted(a.matrices) == sorted(b.matrices)
    for k, m in a.matrices.items():
        assert (m.dtype, m.shape) == (b.matrices[k].dtype, b.matrices[k].shape), k
        assert m.tobytes() == np.ascontiguousarray(b.matrices[k]).tobytes(), k
    norm = [(d, (c, list(acts), *rest)) for d, (c, acts, *rest) in b.decisions]
    assert [(d, (c, list(acts), *rest)) for d, (c, acts, *rest) in a.decisions] == norm
    assert (a.seen, a.counters) == (b.seen, b.counters)
    assert [tuple(r) for r in a.contacts] == [tuple(r) for r in b.contacts]
    assert [tuple(r) for r in a.timers] == [tuple(r) for r in b.timers]
    assert [list(r) for r in a.outbound] == [list(r) for r in b.outbound]
    assert [tuple(r) for r in a.identity] == [tuple(r) for r in b.identity]
    norm = [(*r[:4], list(r[4]), *r[5:]) for r in b.answers]
    assert [(*r[:4], list(r[4]), *r[5:]) for r in a.answers] == norm


def _table(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as src:
        return ipc.open_file(src).read_all()


def test_a_snapshot_written_before_the_split_reads_back_as_written() -> None:
    _same(snapshot.read(str(FIXTURE), NAME, "layout-k"), STATE)


# What formats 3 and 4 changed: the format number, and a slot per idempotency key (and
# a file added: ADDED).
CHANGED_SINCE = ("profiles.arrow", "seen.arrow")


def test_the_same_state_is_written_to_the_same_files(tmp_path: Path) -> None:
    path = Path(snapshot.write(str(tmp_path), STATE, generation=3))
    assert path.name == NAME
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES + ADDED)
    for f in FILES:
        new, old = _table(path / f), _table(FIXTURE / NAME / f)
        if f in CHANGED_SINCE:
            continue
        assert new.schema.equals(old.schema, check_metadata=True), f
        assert repr(new.to_pydict()) == repr(old.to_pydict()), f  # (NaN equals NaN here)
        if pa.__version__ == WRITTEN_WITH:
            assert (path / f).read_bytes() == (FIXTURE / NAME / f).read_bytes(), f


def test_formats_3_and_4_change_only_the_format_number_and_add_a_slot_per_key(
    tmp_path: Path,
) -> None:
    path = Path(snapshot.write(str(tmp_path), STATE, generation=3))
    new, old = _table(path / "profiles.arrow"), _table(FIXTURE / NAME / "profiles.arrow")
    assert new.schema.equals(old.schema, check_metadata=False)
    assert repr(new.to_pydict()) == repr(old.to_pydict())
    meta = json.loads(new.schema.metadata[b"nextbest"])
    was = json.loads(old.schema.metadata[b"nextbest"])
    assert (meta.pop("format"), was.pop("format")) == (4, 2)
    assert meta == was
    seen = _table(path / "seen.arrow").to_pydict()
    assert seen == {"key": STATE.seen, "slot": [-1, -1]}  # (the state gave no slots)
    st = dataclasses.replace(STATE, seen_slots=[5, -1])
    back = snapshot.read(str(tmp_path), snapshot.write(str(tmp_path / "b"), st, 3), "layout-k")
    assert back.seen_slots == [5, -1]
    assert snapshot.read(str(FIXTURE), NAME, "layout-k").seen_slots == [-1, -1]


ANSWER = (
    b"\x01" * 16,
    5,
    "d-0005-00",
    "c1",
    ("a",),
    100.5,
    "email",
    None,
    "propensity@3",
    ["champion", ["email", "best net priority", {"email": {"cost": 0.1}}], [["g", 1.5]], None],
)


def test_format_4_keeps_the_answers_given_under_a_request_id(tmp_path: Path) -> None:
    assert snapshot.read(str(FIXTURE), NAME, "layout-k").answers == []  # (none before)
    st = dataclasses.replace(STATE, answers=[ANSWER])
    path = Path(snapshot.write(str(tmp_path), st, generation=3))
    table = _table(path / "answers.arrow").to_pydict()
    assert table["key"] == [ANSWER[0]] and table["slot"] == [5]
    assert snapshot.read(str(tmp_path), path.name, "layout-k").answers == [
        (*ANSWER[:4], ["a"], *ANSWER[5:])
    ]


@pytest.mark.parametrize("absent", ["contacts", "timers", "outbound", "identity"])
def test_a_snapshot_without_a_file_older_shards_did_not_write_reads_it_empty(
    tmp_path: Path, absent: str
) -> None:
    shutil.copytree(FIXTURE / NAME, tmp_path / NAME)
    (tmp_path / NAME / f"{absent}.arrow").unlink()
    back = snapshot.read(str(tmp_path), NAME, "layout-k")
    assert getattr(back, absent) == []
    for part in {"contacts", "timers", "outbound", "identity"} - {absent}:
        assert getattr(back, part) == getattr(STATE, part)
    assert back.counters == STATE.counters


def test_a_snapshot_of_another_layout_or_damaged_is_refused(tmp_path: Path) -> None:
    with pytest.raises(snapshot.SnapshotError, match="another profile schema"):
        snapshot.read(str(FIXTURE), NAME, "other")
    shutil.copytree(FIXTURE / NAME, tmp_path / NAME)
    (tmp_path / NAME / "seen.arrow").write_bytes(b"not arrow")
    with pytest.raises(snapshot.SnapshotError, match="unreadable snapshot"):
        snapshot.read(str(tmp_path), NAME, "layout-k")


text = st.text(max_size=8)
ts = st.floats(allow_nan=False, allow_infinity=False)
maybe = st.none() | text


@st.composite
def states(draw: Any) -> snapshot.State:
    """Any state a shard could hand to a snapshot."""
    ids = draw(st.lists(st.text(min_size=1, max_size=6), unique=True, max_size=5))
    n = len(ids)
    widths = draw(st.fixed_dictionaries({k: st.integers(0, 3) for k in snapshot._DTYPES}))
    matrices = {
        k: np.array(
            draw(st.lists(st.integers(0, 60000), min_size=n * w, max_size=n * w)),
            dtype=snapshot._DTYPES[k].to_pandas_dtype(),
        ).reshape(n, w)
        for k, w in widths.items()
    }
    decision = st.tuples(text, st.tuples(text, st.lists(text).map(tuple), ts, text, maybe, maybe))
    message = st.tuples(text, text, text, text, ts, st.dictionaries(text, text)).map(list)
    ident = st.tuples(text, text, maybe, maybe, maybe, st.none() | ts)
    extra = st.lists(st.none() | text | ts | st.lists(text, max_size=2), max_size=4)
    answer = st.tuples(
        st.binary(min_size=16, max_size=16),
        st.integers(-1, 16383),
        text,
        text,
        st.lists(text).map(tuple),
        ts,
        text,
        maybe,
        maybe,
        extra,
    )
    return snapshot.State(
        wal_seq=draw(st.integers(0, 10**9)),
        layout_key=draw(text),
        id_blob="".join(ids).encode(),
        id_ends=np.cumsum([len(i.encode()) for i in ids], dtype=np.uint64),
        matrices=matrices,
        decisions=draw(st.lists(decision, max_size=3)),
        seen=draw(st.lists(st.binary(min_size=16, max_size=16), max_size=3)),
        counters=draw(st.dictionaries(text, st.integers(0, 2**40), max_size=2)),
        contacts=draw(st.lists(st.tuples(text, ts, text, text, text), max_size=3)),
        timers=draw(st.lists(st.tuples(text, text, ts, ts), max_size=3)),
        outbound=draw(st.lists(message, max_size=2)),
        identity=draw(st.lists(ident, max_size=3)),
        answers=draw(st.lists(answer, max_size=2)),
    )


@given(state=states())
@examples(40)
def test_any_state_round_trips(tmp_path_factory: pytest.TempPathFactory, state: Any) -> None:
    directory = tmp_path_factory.mktemp("snap")
    path = Path(snapshot.write(str(directory), state, generation=1))
    _same(snapshot.read(str(directory), path.name, state.layout_key), state)
