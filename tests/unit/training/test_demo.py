"""The demo data: reproducible from its seed, and every offer one a shard could have made
(a modelled action live on the offer's channel), at most `offers` per customer."""

from __future__ import annotations

from collections import Counter

import numpy as np

from decisioning.config import Config
from training.demo import DAY, DEMO_FEATURES, FIXED_NOW, generate


def test_the_same_seed_gives_the_same_data(example_config: Config) -> None:
    a = generate(example_config, customers=40, offers=3, seed=5)
    b = generate(example_config, customers=40, offers=3, seed=5)
    other = generate(example_config, customers=40, offers=3, seed=6)
    np.testing.assert_equal(a.training.to_pydict(), b.training.to_pydict())  # NaN == NaN
    assert a.training.column_names == [*DEMO_FEATURES, "label", "customer_id", "ts"]
    assert [(e.customer_id, e.type, e.ts) for e in a.events] == [
        (e.customer_id, e.type, e.ts) for e in b.events
    ]
    assert a.training["label"].to_pylist() != other.training["label"].to_pylist()


def test_every_offer_is_one_a_shard_could_make(example_config: Config) -> None:
    table = generate(example_config, customers=60, offers=4).training
    actions = {a.id: a for a in example_config.actions}
    rows = table.to_pylist()
    assert rows and max(Counter(r["customer_id"] for r in rows).values()) <= 4
    for r in rows:
        action = actions[r["action_id"]]
        assert action.model and r["channel"] in action.channels
        assert r["action_group"] == action.group and r["label"] in (0, 1)
        assert FIXED_NOW - DAY <= r["ts"] <= FIXED_NOW
    assert set(table["context_device"].to_pylist()) == {"desktop", "mobile", "tablet"}
    segment = table["segment"].to_pylist()  # a categorical profile feature: its strings
    assert set(segment) <= {"mass", "affluent", "private", "student", None}
    assert not np.isnan(table["age"].to_numpy()).any()
