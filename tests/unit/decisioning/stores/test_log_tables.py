"""The decision log's table: a row per eligible candidate in the trace's order, with its
rank, whether and where it was shown, the logging policy's probability, its shadow score
and the very features it was scored on; a decision with nothing eligible is one row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from decisioning.policy.decide import Decision, ScoredAction, Trace
from decisioning.stores.log_tables import DECISIONS_SCHEMA, Decided, decisions_table


def _scored(action_id: str) -> ScoredAction:
    return ScoredAction(action_id, "g", "web", 0.5, 1.0, 1.0, 1.0, 0.5, None)


def _decision(did: str, trace: Trace, shown: list[str], **kw: Any) -> Decision:
    actions = [_scored(a) for a in shown]
    return Decision(did, "c1", 100.5, "web", None, actions, 3, 3, [], trace=trace, **kw)


FEATURES = np.array([[0.1 + 0.2, 2.0], [3.0, np.nextafter(4.0, 5.0)]])
SCORED = Trace(
    ["x", "y", "z"],
    ["m", None, "m"],
    np.array([0.2, 0.5, 0.4]),
    np.array([2.0, 5.0, 2.0]),  # x and z tie: the action id breaks it
    [("m@1", [0, 2], FEATURES)],
)
SHADOW = Trace(["x", "y", "z"], ["m", None, "m"], np.array([0.9, 0.0, 0.0]), np.zeros(3), [])
SHADOW.blocks.append(("m@2", [0], FEATURES[:1]))
NOTHING = Trace([], [], np.zeros(0), np.zeros(0), [])
EXPLORED = Trace(["p", "q"], [None, None], np.array([0.1, 0.1]), np.array([1.0, 1.0]), [])
DECIDED = [
    Decided(_decision("d-1", SCORED, ["y", "x"]), '{"a":1}', "champion", SHADOW),
    Decided(_decision("d-2", NOTHING, []), "{}", "champion", None),
    Decided(
        _decision("d-3", EXPLORED, ["q"], probability={"p": 0.7, "q": 0.3}), "{}", "explore", None
    ),
]


def _row(did: str, ctx: str, variant: str, **values: Any) -> dict[str, Any]:
    base = {
        "decision_id": did,
        "ts": datetime.fromtimestamp(100.5, UTC),
        "customer_id": "c1",
        "channel": "web",
        "placement": None,
        "context": ctx,
        "variant": variant,
    }
    return {f.name: {**base, **values}[f.name] for f in DECISIONS_SCHEMA}


def _candidate(
    model: str | None, version: str | None, p: float | None, prio: float | None
) -> dict[str, Any]:
    return {"model": model, "model_version": version, "propensity": p, "priority": prio}


EXPECTED = [
    _row(
        "d-1",
        '{"a":1}',
        "champion",
        action_id="x",
        **_candidate("m", "m@1", 0.2, 2.0),
        rank=1,
        chosen=True,
        position=1,
        probability=0.0,
        shadow_version="m@2",
        shadow_propensity=0.9,
        features=FEATURES[0].tolist(),
    ),
    _row(
        "d-1",
        '{"a":1}',
        "champion",
        action_id="y",
        **_candidate(None, None, 0.5, 5.0),
        rank=0,
        chosen=True,
        position=0,
        probability=1.0,
        shadow_version=None,
        shadow_propensity=None,
        features=[],
    ),
    _row(
        "d-1",
        '{"a":1}',
        "champion",
        action_id="z",
        **_candidate("m", "m@1", 0.4, 2.0),
        rank=2,
        chosen=False,
        position=None,
        probability=0.0,
        shadow_version=None,
        shadow_propensity=None,
        features=FEATURES[1].tolist(),
    ),
    _row(
        "d-2",
        "{}",
        "champion",
        action_id=None,
        **_candidate(None, None, None, None),
        rank=None,
        chosen=False,
        position=None,
        probability=None,
        shadow_version=None,
        shadow_propensity=None,
        features=[],
    ),
    _row(
        "d-3",
        "{}",
        "explore",
        action_id="p",
        **_candidate(None, None, 0.1, 1.0),
        rank=0,
        chosen=False,
        position=None,
        probability=0.7,
        shadow_version=None,
        shadow_propensity=None,
        features=[],
    ),
    _row(
        "d-3",
        "{}",
        "explore",
        action_id="q",
        **_candidate(None, None, 0.1, 1.0),
        rank=1,
        chosen=True,
        position=0,
        probability=0.3,
        shadow_version=None,
        shadow_propensity=None,
        features=[],
    ),
]


def test_a_row_per_candidate_as_scored_and_one_when_none_was_eligible() -> None:
    table = decisions_table(DECIDED)
    assert table.schema.equals(DECISIONS_SCHEMA)
    assert table.to_pylist() == EXPECTED
    logged = table.column("features").to_pylist()
    assert np.array(logged[0]).tobytes() == FEATURES[0].tobytes()  # bit for bit
    assert np.array(logged[2]).tobytes() == FEATURES[1].tobytes()


def test_an_empty_batch_is_an_empty_table() -> None:
    table = decisions_table([])
    assert table.num_rows == 0 and table.schema.equals(DECISIONS_SCHEMA)
