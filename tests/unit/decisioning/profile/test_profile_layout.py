"""The column layout behind a profile schema is part of the snapshot format: a snapshot
holds the state matrices as they are, checked only by `layout_key`. So the layout a
config gets must never change unless LAYOUT (and with it the key) does."""

from __future__ import annotations

from decisioning.config.loader import config_from_dict
from decisioning.profile import ProfileSchema
from tests.conftest import SMALL

# (float32 column or first bucket, float64 ts column, int32 epoch column); -1: none.
# Count windows' buckets are uint16 columns; the other windows' are float32 columns.
SMALL_AGGREGATES = {
    "views_1h": (0, -1, 0),
    "views_all": (2, -1, -1),
    "spend_1h": (3, -1, 0),
    "min_1h": (9, -1, 0),
    "max_1h": (15, -1, 0),
    "spend_all": (21, -1, -1),
    "min_all": (22, -1, -1),
    "max_all": (23, -1, -1),
    "last_amount": (24, 0, -1),
    "last_amount_1h": (25, 1, -1),
    "since_login": (-1, 2, -1),
    "logins_decay": (26, 3, -1),
    "card_views_1h": (6, -1, 0),
}


def test_the_layout_snapshots_were_written_with_is_kept() -> None:
    s = ProfileSchema(config_from_dict(SMALL))
    assert s.layout_key == "a96de2355f8e718f"
    assert s.attr_col == {"age": 0, "segment": 1}
    assert s.consent_col == {"web": 27, "email": 28}
    assert (s.n32, s.n64, s.ni, s.n16) == (29, 4, 1, 12)
    assert {a.spec.name: (a.col, a.ts_col, a.ep_col) for a in s.aggs} == SMALL_AGGREGATES
