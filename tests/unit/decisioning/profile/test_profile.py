from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from decisioning.errors import InvalidInput
from decisioning.profile import Event, ProfileSchema, ProfileStore
from tests.conftest import examples

T0 = 1_700_000_000.0  # a multiple of 3600 would hide bucket edge cases; it is not one
H = 3600.0


def store(config: Config) -> ProfileStore:
    return ProfileStore(ProfileSchema(config), capacity=2)


def feat(s: ProfileStore, cid: str, name: str, now: float) -> float:
    return float(s.features(cid, now)[s.schema.index[name]])


def test_all_time_count_sum_min_max_last(small_config: Config) -> None:
    s = store(small_config)
    for amount in (30.0, 10.0, 50.0):
        s.apply(Event("c", "purchase", T0, {"amount": amount}))
    s.apply(Event("c", "page_view", T0))
    now = T0 + 10 * 86400
    assert feat(s, "c", "spend_all", now) == 90.0
    assert feat(s, "c", "min_all", now) == 10.0
    assert feat(s, "c", "max_all", now) == 50.0
    assert feat(s, "c", "last_amount", now) == 50.0
    assert feat(s, "c", "views_all", now) == 1.0


def test_windows_expire_as_time_passes(small_config: Config) -> None:
    s = store(small_config)
    s.apply(Event("c", "purchase", T0, {"amount": 20.0}))
    s.apply(Event("c", "purchase", T0 + 600, {"amount": 5.0}))
    s.apply(Event("c", "page_view", T0))
    assert feat(s, "c", "spend_1h", T0 + 700) == 25.0
    assert feat(s, "c", "min_1h", T0 + 700) == 5.0
    assert feat(s, "c", "max_1h", T0 + 700) == 20.0
    assert feat(s, "c", "last_amount_1h", T0 + 700) == 5.0
    assert feat(s, "c", "views_1h", T0 + 700) == 1.0
    # two hours later everything in the 1h window has expired; all-time stays
    later = T0 + 2 * H
    assert feat(s, "c", "spend_1h", later) == 0.0
    assert math.isnan(feat(s, "c", "min_1h", later))
    assert math.isnan(feat(s, "c", "max_1h", later))
    assert math.isnan(feat(s, "c", "last_amount_1h", later))
    assert feat(s, "c", "views_1h", later) == 0.0
    assert feat(s, "c", "spend_all", later) == 25.0


def test_window_slides_by_bucket(small_config: Config) -> None:
    """1h window, 6 buckets: an event leaves the window within one 10-minute bucket."""
    s = store(small_config)
    s.apply(Event("c", "page_view", T0))
    width = H / 6
    bucket_end = (math.floor(T0 / width) + 1) * width
    assert feat(s, "c", "views_1h", bucket_end - 1 + H - width) == 1.0
    assert feat(s, "c", "views_1h", bucket_end + H - width) == 0.0


def test_old_event_counts_all_time_only(small_config: Config) -> None:
    s = store(small_config)
    s.apply(Event("c", "page_view", T0 + 5 * H))
    s.apply(Event("c", "page_view", T0))  # 5 hours late: outside the 1h window
    assert feat(s, "c", "views_1h", T0 + 5 * H) == 1.0
    assert feat(s, "c", "views_all", T0 + 5 * H) == 2.0


def test_where_filter(small_config: Config) -> None:
    s = store(small_config)
    s.apply(Event("c", "page_view", T0, {"page": "cards"}))
    s.apply(Event("c", "page_view", T0, {"page": "loans"}))
    assert feat(s, "c", "card_views_1h", T0 + 1) == 1.0
    assert feat(s, "c", "views_1h", T0 + 1) == 2.0


def test_time_since_and_decay(small_config: Config) -> None:
    s = store(small_config)
    assert math.isnan(feat(s, "c", "since_login", T0))
    s.apply(Event("c", "login", T0))
    s.apply(Event("c", "login", T0 + H))
    assert feat(s, "c", "since_login", T0 + 2 * H) == pytest.approx(H)
    # two logins, one an hour old at T0+H: 0.5 + 1 = 1.5 at T0+H, halves an hour later
    assert feat(s, "c", "logins_decay", T0 + H) == pytest.approx(1.5, rel=1e-6)
    assert feat(s, "c", "logins_decay", T0 + 2 * H) == pytest.approx(0.75, rel=1e-6)
    # a late login adds its own decayed weight
    s.apply(Event("c", "login", T0))
    assert feat(s, "c", "logins_decay", T0 + H) == pytest.approx(2.0, rel=1e-6)
    assert feat(s, "c", "since_login", T0 + 2 * H) == pytest.approx(H)


def test_missing_or_non_numeric_property_is_skipped(small_config: Config) -> None:
    s = store(small_config)
    s.apply(Event("c", "purchase", T0, {"amount": "lots"}))
    s.apply(Event("c", "purchase", T0, {}))
    assert feat(s, "c", "spend_all", T0) == 0.0


def test_attributes_consent_and_batch_atomicity(small_config: Config) -> None:
    s = store(small_config)
    s.apply_many(
        [
            Event("c", "profile_update", T0, {"age": 40, "segment": "affluent"}),
            Event("c", "consent", T0, {"email": False, "web": True}),
        ]
    )
    view = s.profile_view("c", T0)
    assert view["attributes"] == {"age": 40.0, "segment": "affluent"}
    assert view["consent"] == {"web": True, "email": False}
    with pytest.raises(InvalidInput) as e:
        s.apply_many(
            [Event("c", "page_view", T0), Event("c", "profile_update", T0, {"segment": "platinum"})]
        )
    assert e.value.field == "properties.segment"
    assert feat(s, "c", "views_all", T0) == 0.0  # the good event before it was not applied
    with pytest.raises(InvalidInput):
        s.apply_many([Event("c", "profile_update", T0, {"shoe_size": 42})])
    with pytest.raises(InvalidInput) as e:
        s.apply_many([Event("c", "consent", T0, {"fax": True})])
    assert e.value.code == "unknown_channel"


def test_unknown_customer_is_an_empty_profile(small_config: Config) -> None:
    s = store(small_config)
    v = s.profile_view("nobody", T0)
    assert v["known"] is False
    assert v["aggregates"]["views_all"] == 0.0
    assert len(s) == 0


def test_store_grows_past_capacity(small_config: Config) -> None:
    s = store(small_config)
    for i in range(50):
        s.apply(Event(f"c{i}", "page_view", T0))
    assert len(s) == 50
    assert all(feat(s, f"c{i}", "views_all", T0) == 1.0 for i in range(50))


@examples(60, HealthCheck.function_scoped_fixture)
@given(
    offsets=st.lists(st.floats(min_value=0, max_value=4 * H), max_size=25),
    now_offset=st.floats(min_value=0, max_value=6 * H),
)
def test_windowed_count_matches_brute_force(
    small_config: Config, offsets: list[float], now_offset: float
) -> None:
    """Any arrival order: the 1h count equals the events in the bucket-aligned window."""
    s = store(small_config)
    for off in offsets:
        s.apply(Event("c", "page_view", T0 + off))
    now = T0 + max(now_offset, max(offsets, default=0.0))
    width = H / 6
    e_now = math.floor(now / width)
    expected = sum(1 for off in offsets if e_now - 6 < math.floor((T0 + off) / width) <= e_now)
    assert feat(s, "c", "views_1h", now) == expected


MIXED = [  # (name, kind, event, window hours, buckets): one read pads them to 9 buckets;
    # windows of equal bucket width share a clock whatever their event or bucket count
    ("n_1h_6", "count", "purchase", 1, 6),
    ("n_2h_4", "count", "purchase", 2, 4),
    ("s_3h_9", "sum", "purchase", 3, 9),
    ("lo_2h_5", "min", "purchase", 2, 5),
    ("hi_1h_3", "max", "purchase", 1, 3),
    ("r_1h_6", "count", "refund", 1, 6),  # 600 s, like n_1h_6
    ("rs_2h_6", "sum", "refund", 2, 6),  # 1200 s, like s_3h_9 and hi_1h_3
    ("rn_4h_12", "count", "refund", 4, 12),  # 1200 s
]


@examples(80, HealthCheck.function_scoped_fixture)
@given(
    events=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=5 * H),
            st.integers(1, 1000),
            st.sampled_from(["purchase", "refund"]),
        ),
        max_size=30,
    ),
    now_offset=st.floats(min_value=0, max_value=8 * H),
)
def test_windows_of_every_bucket_count_match_brute_force(
    small_config: Config, events: list[tuple[float, int, str]], now_offset: float
) -> None:
    """Windows of different widths, bucket counts and events, read together, each stay
    exact, in any arrival order."""
    data = small_config.model_dump(mode="json")
    data["profile"]["aggregates"] += [
        {
            "name": name,
            "kind": kind,
            "event": event,
            "window": f"{hours}h",
            "buckets": b,
            **({} if kind == "count" else {"property": "amount"}),
        }
        for name, kind, event, hours, b in MIXED
    ]
    s = ProfileStore(ProfileSchema(config_from_dict(data, "mixed")))
    assert s.schema.ni == 4  # 600, 1200, 1440 and 1800 s: four clocks for 12 windows
    for off, amount, event in events:
        s.apply(Event("c", event, T0 + off, {"amount": amount}))
    now = T0 + max(now_offset, max((off for off, _, _ in events), default=0.0))
    vec = s.features("c", now)
    names = s.schema.feature_names
    for name, kind, event, hours, b in MIXED:
        width = hours * H / b
        e_now = math.floor(now / width)
        inside = [
            a
            for off, a, ev in events
            if ev == event and e_now - b < math.floor((T0 + off) / width) <= e_now
        ]
        expected = {
            "count": len(inside),
            "sum": sum(inside),
            "min": min(inside, default=math.nan),
            "max": max(inside, default=math.nan),
        }[kind]
        got = float(vec[names.index(name)])
        assert (math.isnan(got) and math.isnan(expected)) or got == expected, (name, got)


def test_count_bucket_saturates_instead_of_wrapping(small_config: Config) -> None:
    """A count bucket is a uint16: past 65,535 events it stays there, never back to 0."""
    s = store(small_config)
    for _ in range(65_540):
        s.apply(Event("c", "page_view", T0))
    assert feat(s, "c", "views_1h", T0) == 65_535.0
    assert feat(s, "c", "views_all", T0) == 65_540.0  # all-time counts are float32
    s.apply(Event("c", "page_view", T0 + 600))  # the next bucket starts from zero
    assert feat(s, "c", "views_1h", T0 + 600) == 65_536.0


def test_far_future_events_are_refused_before_any_applies(small_config: Config) -> None:
    s = store(small_config)
    skewed = Event("c", "page_view", T0 + 299)
    future = Event("c", "page_view", T0 + 301)  # max_future defaults to 300 s
    with pytest.raises(InvalidInput, match="in the future") as e:
        s.apply_many([skewed, future], now=T0)
    assert e.value.field == "ts"
    assert "c" not in s
    s.apply_many([skewed], now=T0)
    assert feat(s, "c", "views_1h", T0 + 299) == 1.0


def test_events_older_than_max_age_are_refused(small_config: Config) -> None:
    s = store(small_config)
    day = 86400.0
    s.apply_many([Event("c", "page_view", T0 - 400 * day)], now=T0)  # at the limit
    with pytest.raises(InvalidInput, match="days old") as e:
        s.apply_many([Event("c", "page_view", T0 - 400 * day - 1)], now=T0)
    assert e.value.field == "ts"
