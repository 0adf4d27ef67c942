"""Merging two profiles of one person: every aggregate after the merge equals the
aggregate of one profile that received both event streams."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.profile import Event, ProfileSchema, ProfileStore
from tests.conftest import SMALL, examples
from tests.unit.decisioning.policy.test_decide import NOW

AGGS = [
    {"name": "views_1h", "kind": "count", "event": "page_view", "window": "1h"},
    {"name": "views_all", "kind": "count", "event": "page_view"},
    {"name": "spend_1h", "kind": "sum", "event": "purchase", "property": "amount", "window": "1h"},
    {"name": "spend_all", "kind": "sum", "event": "purchase", "property": "amount"},
    {"name": "min_1h", "kind": "min", "event": "purchase", "property": "amount", "window": "1h"},
    {"name": "max_all", "kind": "max", "event": "purchase", "property": "amount"},
    {"name": "min_all", "kind": "min", "event": "purchase", "property": "amount"},
    {"name": "last_amount", "kind": "last", "event": "purchase", "property": "amount"},
    {"name": "last_1h", "kind": "last", "event": "purchase", "property": "amount", "window": "1h"},
    {"name": "since_view", "kind": "time_since", "event": "page_view"},
    {"name": "logins", "kind": "decayed_count", "event": "login", "half_life": "1h"},
    {"name": "max_2h", "kind": "max", "event": "purchase", "property": "amount", "window": "2h",
     "buckets": 4},
]  # fmt: skip


def _config() -> Config:
    return config_from_dict({**SMALL, "profile": {**SMALL["profile"], "aggregates": AGGS}})


EVENT = st.tuples(
    st.sampled_from(["page_view", "purchase", "login"]),
    st.floats(-4 * 3600, 0),  # seconds before NOW
    st.integers(1, 500),  # amount
)


def _events(cid: str, spec: list[tuple[str, float, int]]) -> list[Event]:
    return [Event(cid, kind, NOW + dt, {"amount": amount}) for kind, dt, amount in spec]


@examples(200)
@given(
    a=st.lists(EVENT, max_size=25),
    b=st.lists(EVENT, max_size=25),
    order=st.randoms(use_true_random=False),
)
def test_merged_aggregates_equal_those_of_the_union_of_both_streams(
    a: list[tuple[str, float, int]], b: list[tuple[str, float, int]], order: Any
) -> None:
    cfg = _config()
    # distinct timestamps: "last" is then the value of one well-defined event
    stamps = [NOW + t for _, t, _ in a + b]
    if len(set(stamps)) != len(stamps):
        return
    two = ProfileStore(ProfileSchema(cfg))
    for e in _events("a", a):
        two.apply(e)
    for e in _events("b", b):
        two.apply(e)
    other = two.take("b")
    if other is not None:
        two.merge("a", other)
    one = ProfileStore(ProfileSchema(cfg))
    union = _events("u", a + b)
    order.shuffle(union)  # any arrival order of the union
    for e in union:
        one.apply(e)
    now = NOW + 1.0
    merged, expected = two.features("a", now), one.features("u", now)
    names = ProfileSchema(cfg).feature_names
    for i, name in enumerate(names):
        if name not in {x["name"] for x in AGGS}:
            continue
        x, y = float(merged[i]), float(expected[i])
        if math.isnan(y):
            assert math.isnan(x), (name, x, y)
        else:
            assert math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-3), (name, x, y)


def test_consent_takes_the_stricter_and_attributes_stay() -> None:
    cfg = _config()
    store = ProfileStore(ProfileSchema(cfg))
    for cid, age, email, web in (("a", None, True, None), ("b", 40, None, False)):
        if age is not None:
            store.apply(Event(cid, "profile_update", NOW, {"age": age}))
        props = {ch: v for ch, v in (("email", email), ("web", web)) if v is not None}
        store.apply(Event(cid, "consent", NOW, props))
    store.apply(Event("a", "consent", NOW, {"web": True}))
    other = store.take("b")
    assert other is not None
    store.merge("a", other)
    view = store.profile_view("a", NOW)
    assert view["consent"] == {"web": False, "email": None}  # no beats yes; unknown beats yes
    assert view["attributes"]["age"] == 40.0  # unset here: taken from the other
    assert store.take("nobody") is None
