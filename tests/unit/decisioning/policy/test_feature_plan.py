"""Building a model's feature plan: each kind of feature name lands in its place (profile
columns and their categorical remaps, per-action columns, the value, the channel, context
fields), and a model whose names cannot all be built is refused with every one missing,
in the model's order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decisioning.config import Config
from decisioning.errors import ModelIncompatible
from decisioning.policy.catalog import Catalog
from decisioning.policy.features import FeaturePlan
from decisioning.profile import ProfileSchema

NAMES = [
    "action_group",
    "segment",
    "age",
    "context_device",
    "action_lever",
    "channel",
    "consent_email",
    "context_hour",
    "action_value",
    "action_id",
    "since_last_login",
    "page_views_1h",
]
CATEGORIES = {
    "action_group": ["loans", "cards"],
    "segment": ["student", "mass"],
    "context_device": ["mobile", "desktop"],
    "channel": ["sms", "web"],
    "action_id": ["fee_waiver", "travel_card"],
}


def _nan_list(a: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in a]


def test_every_kind_of_feature_lands_in_its_place(example_config: Config) -> None:
    schema = ProfileSchema(example_config)
    catalog = Catalog(example_config, schema)
    plan = FeaturePlan.build("m", NAMES, CATEGORIES, example_config, schema, catalog)
    assert plan.names == tuple(NAMES)
    assert plan.prof_pos.tolist() == [1, 2, 6, 10, 11]
    assert plan.prof_idx.tolist() == [schema.index[NAMES[c]] for c in (1, 2, 6, 10, 11)]
    [(col, lookup)] = plan.prof_remaps  # config order mass, affluent, private, student
    assert col == 1 and _nan_list(lookup) == [1.0, None, None, 0.0]
    groups, levers, ids = plan.action_cols
    assert groups[0] == 0 and _nan_list(groups[1]) == [
        {"loans": 0.0, "cards": 1.0}.get(a.group) for a in catalog.actions
    ]
    assert levers[0] == 4 and levers[1].tolist() == [a.lever for a in catalog.actions]
    assert ids[0] == 9 and _nan_list(ids[1]) == [
        {"fee_waiver": 0.0, "travel_card": 1.0}.get(a.id) for a in catalog.actions
    ]
    assert (plan.value_col, plan.channel_col) == (8, 5)
    assert plan.channel_codes == {"sms": 0.0, "web": 1.0}
    assert plan.ctx_cols == ((3, "device", {"mobile": 0.0, "desktop": 1.0}), (7, "hour", None))
    assert plan.categorical == (0, 1, 3, 5, 9)
    assert plan.float32_cols.tolist() == [2, 6]  # age, consent_email (not times, not counts)


def test_a_plan_without_action_value_or_channel_says_so(example_config: Config) -> None:
    schema = ProfileSchema(example_config)
    catalog = Catalog(example_config, schema)
    plan = FeaturePlan.build("m", ["age"], {}, example_config, schema, catalog)
    assert (plan.value_col, plan.channel_col, plan.channel_codes) == (-1, -1, {})
    assert plan.action_cols == () and plan.ctx_cols == () and plan.prof_remaps == ()


def test_every_missing_feature_is_listed_in_model_order(example_config: Config) -> None:
    schema = ProfileSchema(example_config)
    catalog = Catalog(example_config, schema)
    names = ["shoe_size", "segment", "age", "channel", "context_device", "action_id", "context_x"]
    with pytest.raises(ModelIncompatible) as e:
        FeaturePlan.build("m", names, {}, example_config, schema, catalog)
    no_vocab = "(categorical, but the manifest has no vocabulary)"
    assert e.value.missing == [
        "shoe_size",
        f"segment {no_vocab}",
        f"channel {no_vocab}",
        f"context_device {no_vocab}",
        f"action_id {no_vocab}",
        "context_x",
    ]
