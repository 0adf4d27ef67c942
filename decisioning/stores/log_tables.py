"""The Parquet tables of the decision and outcome logs: their schemas, and the tables
built from what a shard handed over (decisioning/stores/decision_log.py writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from decisioning.policy.decide import Decision, Trace

__all__ = [
    "DECISIONS_SCHEMA",
    "OUTCOMES_SCHEMA",
    "Decided",
    "Outcome",
    "decisions_table",
    "outcomes_table",
]

DECISIONS_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("customer_id", pa.string()),
        ("channel", pa.string()),
        ("placement", pa.string()),
        ("context", pa.string()),  # JSON, keys sorted
        ("action_id", pa.string()),  # null: no candidate was eligible
        ("model", pa.string()),
        ("model_version", pa.string()),  # e.g. propensity@3; null: not scored by a model
        ("variant", pa.string()),  # champion, challenger, explore
        ("features", pa.list_(pa.float64())),  # as scored, in the model's feature order
        ("propensity", pa.float64()),
        ("priority", pa.float64()),
        ("rank", pa.int32()),  # 0 = highest priority
        ("chosen", pa.bool_()),
        ("position", pa.int32()),  # in the answer (0 = first); null: not shown
        ("probability", pa.float64()),  # that the logging policy put it first
        ("shadow_version", pa.string()),  # a model in shadow: scored too, not used
        ("shadow_propensity", pa.float64()),
    ]
)
OUTCOMES_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("action_id", pa.string()),
        ("customer_id", pa.string()),
        ("outcome", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision as the shard handed it to the log, with its context as JSON."""

    decision: Decision
    context: str
    variant: str
    shadow: Trace | None  # the same candidates, scored by the models in shadow


Outcome = tuple[str, str, str, str, float]  # decision_id, action_id, customer_id, outcome, ts


class _Columns:
    """The columns of a decisions table, filled a row at a time; the features of every
    row back to back, with where each row's end."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {
            f.name: [] for f in DECISIONS_SCHEMA if f.name != "features"
        }
        self.flat: list[np.ndarray] = []
        self.offsets = [0]

    def row(self, e: Decided, features: np.ndarray | None, **values: Any) -> None:
        """One row of decision `e`: what the decision says, then the candidate's `values`."""
        d, cols = e.decision, self.cols
        cols["decision_id"].append(d.decision_id)
        cols["ts"].append(int(d.ts * 1_000_000))
        cols["customer_id"].append(d.customer_id)
        cols["channel"].append(d.channel)
        cols["placement"].append(d.placement)
        cols["context"].append(e.context)
        cols["variant"].append(e.variant)
        for k, v in values.items():
            cols[k].append(v)
        if features is not None:
            self.flat.append(features)
        self.offsets.append(self.offsets[-1] + (0 if features is None else len(features)))

    def table(self) -> pa.Table:
        values = np.concatenate(self.flat) if self.flat else np.empty(0, dtype=np.float64)
        arrays = {
            name: pa.array(v, DECISIONS_SCHEMA.field(name).type) for name, v in self.cols.items()
        }
        arrays["features"] = pa.ListArray.from_arrays(
            pa.array(self.offsets, pa.int32()), pa.array(values, pa.float64())
        )
        return pa.table([arrays[f.name] for f in DECISIONS_SCHEMA], schema=DECISIONS_SCHEMA)


def _nothing_eligible(out: _Columns, e: Decided) -> None:
    """The row of a decision with no eligible candidate: it still decided (do nothing)."""
    out.row(
        e,
        None,
        action_id=None,
        model=None,
        model_version=None,
        propensity=None,
        priority=None,
        rank=None,
        chosen=False,
        position=None,
        probability=None,
        shadow_version=None,
        shadow_propensity=None,
    )


def _scored(tr: Trace, n: int) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Per candidate: the feature row its model scored and that model's ref (None: none)."""
    features: list[np.ndarray | None] = [None] * n
    refs: list[str | None] = [None] * n
    for ref, idx, x in tr.blocks:
        for j, i in enumerate(idx):
            features[i] = x[j]
            refs[i] = ref
    return features, refs


def _ranks(tr: Trace, n: int) -> list[int]:
    """Per candidate, its rank by priority (0 = highest; ties by action id)."""
    order = sorted(range(n), key=lambda i: (-tr.priority[i], tr.action_ids[i]))
    ranks = [0] * n
    for r, i in enumerate(order):
        ranks[i] = r
    return ranks


def _shadow_refs(sh: Trace | None, n: int) -> list[str | None]:
    """Per candidate, the ref of the model in shadow that scored it (None: none)."""
    refs: list[str | None] = [None] * n
    for ref, idx, _ in sh.blocks if sh is not None else ():
        for i in idx:
            refs[i] = ref
    return refs


def _candidates(out: _Columns, e: Decided, tr: Trace) -> None:
    """A row per eligible candidate, in the trace's order."""
    d, sh, n = e.decision, e.shadow, len(tr.action_ids)
    features, refs = _scored(tr, n)
    ranks = _ranks(tr, n)
    shadow_refs = _shadow_refs(sh, n)
    chosen = {a.action_id for a in d.actions}
    positions = {a.action_id: j for j, a in enumerate(d.actions)}
    first = d.actions[0].action_id if d.actions else None
    for i in range(n):
        aid = tr.action_ids[i]
        if d.probability is not None:  # an exploring policy
            p = d.probability.get(aid, 0.0)
        else:
            p = 1.0 if aid == first else 0.0
        out.row(
            e,
            features[i],
            action_id=aid,
            model=tr.models[i],
            model_version=refs[i],
            propensity=float(tr.propensity[i]),
            priority=float(tr.priority[i]),
            rank=ranks[i],
            chosen=aid in chosen,
            position=positions.get(aid),
            probability=p,
            shadow_version=(ref_i := shadow_refs[i]),
            shadow_propensity=None if sh is None or ref_i is None else float(sh.propensity[i]),
        )


def decisions_table(decided: list[Decided]) -> pa.Table:
    """A row per eligible candidate of each decision (one null row when none was)."""
    out = _Columns()
    for e in decided:
        tr = e.decision.trace
        assert tr is not None
        if len(tr.action_ids) == 0:
            _nothing_eligible(out, e)
        else:
            _candidates(out, e, tr)
    return out.table()


def outcomes_table(rows: list[Outcome]) -> pa.Table:
    """A row per outcome."""
    decision_ids, action_ids, customer_ids, outcomes, ts = (
        list(c) for c in zip(*rows, strict=True)
    )
    return pa.table(
        [
            pa.array(decision_ids, pa.string()),
            pa.array(action_ids, pa.string()),
            pa.array(customer_ids, pa.string()),
            pa.array(outcomes, pa.string()),
            pa.array([int(t * 1_000_000) for t in ts], pa.timestamp("us", tz="UTC")),
        ],
        schema=OUTCOMES_SCHEMA,
    )
