"""Synthetic retail-bank data for the demo config: customers, event streams, and offers
whose acceptance depends on the profile, so a model has something real to learn.

The training rows are built by the shards' own code (ProfileStore + FeaturePlan) at the
moment of each simulated offer, so the demo model is trained on exactly the features
it is scored on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from decisioning.config import Config
from decisioning.policy.catalog import Catalog, context_of
from decisioning.policy.features import FeaturePlan, default_vocabularies
from decisioning.policy.rules import Env
from decisioning.profile import CONSENT, PROFILE_UPDATE, Event, ProfileSchema, ProfileStore

__all__ = ["DemoData", "generate", "DEMO_FEATURES"]

DAY = 86400.0
PAGES = ["cards", "loans", "savings", "travel", "insurance", "home"]
TOPIC = {
    "cards": "card_views_7d",
    "loans": "loan_views_7d",
    "savings": "savings_views_7d",
    "insurance": "insurance_views_30d",
}
DEMO_FEATURES = [
    "age",
    "income",
    "tenure_months",
    "credit_score",
    "segment",
    "region",
    "has_credit_card",
    "has_mortgage",
    "has_savings",
    "page_views_24h",
    "card_views_7d",
    "loan_views_7d",
    "savings_views_7d",
    "travel_views_30d",
    "insurance_views_30d",
    "purchases_30d",
    "spend_30d",
    "travel_spend_30d",
    "max_purchase_30d",
    "balance",
    "since_last_login",
    "logins_decayed",
    "complaints_30d",
    "action_id",
    "action_group",
    "action_value",
    "channel",
    "context_device",
]


@dataclass(frozen=True, slots=True)
class DemoData:
    events: list[Event]
    training: pa.Table


def _customer_events(rng: np.random.Generator, cid: str, now: float) -> list[Event]:
    age = int(rng.integers(18, 80))
    segment = str(rng.choice(["mass", "affluent", "private", "student"], p=[0.6, 0.25, 0.05, 0.1]))
    if segment == "student":
        age = int(rng.integers(18, 26))
    income = float(rng.lognormal(10.6 + (0.6 if segment in ("affluent", "private") else 0), 0.4))
    attrs: dict[str, Any] = {
        "age": age,
        "income": round(income, 2),
        "tenure_months": int(rng.integers(1, 240)),
        "credit_score": int(np.clip(rng.normal(680, 60), 400, 850)),
        "segment": segment,
        "region": str(rng.choice(["north", "south", "east", "west"])),
        "has_credit_card": int(rng.random() < 0.45),
        "has_mortgage": int(rng.random() < 0.3),
        "has_savings": int(rng.random() < 0.5),
    }
    start = now - 30 * DAY
    events = [
        Event(cid, PROFILE_UPDATE, start, attrs),
        Event(
            cid,
            CONSENT,
            start,
            {
                "web": True,
                "app": True,
                "email": rng.random() < 0.7,
                "sms": rng.random() < 0.4,
                "call_center": True,
            },
        ),
    ]
    interest = rng.dirichlet(np.ones(len(PAGES)) * 0.6)
    activity = rng.gamma(2.0, 1.0)
    for _ in range(int(rng.poisson(12 * activity))):
        events.append(Event(cid, "login", start + rng.random() * 30 * DAY))
    for _ in range(int(rng.poisson(25 * activity))):
        page = str(rng.choice(PAGES, p=interest))
        events.append(
            Event(cid, "page_view", now - rng.exponential(6 * DAY) % (30 * DAY), {"page": page})
        )
    for _ in range(int(rng.poisson(8 * activity))):
        cat = "travel" if rng.random() < interest[3] * 2 else "retail"
        events.append(
            Event(
                cid,
                "purchase",
                start + rng.random() * 30 * DAY,
                {"amount": round(float(rng.lognormal(3.5, 1.0)), 2), "category": cat},
            )
        )
    balance = float(rng.lognormal(8.0 + (1.5 if segment in ("affluent", "private") else 0), 1.0))
    events.append(
        Event(cid, "balance_update", now - rng.random() * 5 * DAY, {"balance": round(balance, 2)})
    )
    if rng.random() < 0.08:
        events.append(Event(cid, "complaint", now - rng.random() * 20 * DAY, {"topic": "fees"}))
    events.sort(key=lambda e: e.ts)
    return events


def _true_logit(f: dict[str, float], action_id: str, group: str, device: str) -> float:
    def v(name: str) -> float:
        x = f.get(name, math.nan)
        return 0.0 if x != x else x

    logit = -3.2 + 0.35 * min(v(TOPIC.get(group, "page_views_24h")), 8)
    if action_id == "travel_card":
        logit += 0.25 * min(v("travel_views_30d"), 8) + 0.004 * min(v("travel_spend_30d"), 500)
    if action_id == "premium_card":
        logit += 1.0 * (v("income") > 60000)
    if action_id == "student_card":
        logit += 1.5
    if group == "loans":
        logit += 0.6 * (v("credit_score") > 700) - 0.5 * (v("age") > 60)
    if group == "savings" or group == "investments":
        logit += 0.5 * math.log10(1 + v("balance")) - 1.5
    if group == "insurance":
        logit += 0.3 * (v("has_mortgage") > 0) + 0.2 * min(v("travel_views_30d"), 5)
    if group == "retention":
        logit += 1.2 * v("complaints_30d")
    logit += 0.3 * (device == "mobile" and group in ("cards", "savings"))
    logit += 0.15 * min(v("logins_decayed"), 5) - 0.3
    return logit


FIXED_NOW = 1_763_900_000.0  # training data is reproducible: same seed, same table


def generate(
    config: Config,
    customers: int = 3000,
    offers: int = 6,
    seed: int = 42,
    now: float = FIXED_NOW,
) -> DemoData:
    """Simulate `customers` customers and `offers` random offers each (uniform logging).

    Events span the 30 days before `now`; pass the current time to load live profiles.
    """
    sim = _Simulation(config, np.random.default_rng(seed), customers)
    for i in range(customers):
        cid = f"c-{i}"
        sim.customer(cid, now)
        for _ in range(offers):
            sim.offer(cid, now)
    return DemoData(events=sim.events, training=sim.table())


_RAW = ("action_id", "action_group", "channel", "context_device")  # columns kept as strings


class _Simulation:
    """The shards' own profile store and feature plan, and the rows simulated so far.
    Every random draw comes from one generator, in a fixed order: same seed, same data."""

    def __init__(self, config: Config, rng: np.random.Generator, customers: int) -> None:
        self.rng = rng
        self.schema = ProfileSchema(config)
        self.catalog = Catalog(config, self.schema)
        self.store = ProfileStore(self.schema, capacity=customers)
        vocab = default_vocabularies(config, self.schema)
        self.features = list(DEMO_FEATURES)
        categories = {k: v for k, v in vocab.items() if k in self.features}
        self.plan = FeaturePlan.build(
            "demo", self.features, categories, config, self.schema, self.catalog
        )
        self.channels = [c for c in ("web", "app", "email") if c in config.channels]
        self.events: list[Event] = []
        self.rows: list[np.ndarray] = []
        self.labels: list[int] = []
        self.meta: dict[str, list[Any]] = {"customer_id": [], "ts": []}
        self.raw: dict[str, list[Any]] = {k: [] for k in _RAW}

    def customer(self, cid: str, now: float) -> None:
        """A customer's 30 days of events, up to a day before `now`, into the store."""
        events = _customer_events(self.rng, cid, now - DAY)
        self.store.apply_many(events)
        self.events.extend(events)

    def offer(self, cid: str, now: float) -> None:
        """One offer in the last day, drawn uniformly from the actions the customer is
        eligible for on a random channel, accepted with the true propensity."""
        rng, schema = self.rng, self.schema
        t = now - rng.random() * DAY
        channel = str(rng.choice(self.channels))
        device = str(rng.choice(["desktop", "mobile", "tablet"], p=[0.5, 0.4, 0.1]))
        prof = self.store.features(cid, t)
        env = Env(prof.tolist(), context_of(channel, "home_hero", {"device": device}))
        live = []
        for a in self.catalog.live(channel, t):
            env.action = a
            env.value = a.value(env)
            if a.model and (a.eligibility is None or a.eligibility.holds(env)):
                live.append((a, env.value))
        if not live:
            return
        a, value = live[int(rng.integers(len(live)))]
        x = self.plan.matrix(prof, [a], [value], channel, {"device": device})[0]
        named = {n: float(prof[schema.index[n]]) for n in schema.feature_names}
        p = 1 / (1 + math.exp(-_true_logit(named, a.id, a.group, device)))
        self.rows.append(x)
        self.labels.append(int(rng.random() < p))
        self.meta["customer_id"].append(cid)
        self.meta["ts"].append(t)
        for k, val in zip(_RAW, (a.id, a.group, channel, device), strict=True):
            self.raw[k].append(val)

    def table(self) -> pa.Table:
        """The training table: the feature columns (categories as their strings), the
        label, the customer and the time of the offer."""
        mat = np.vstack(self.rows) if self.rows else np.empty((0, len(self.features)))
        cols: dict[str, Any] = {}
        for j, f in enumerate(self.features):
            if f in self.raw:
                cols[f] = self.raw[f]
            elif f in self.schema.categories:
                cols[f] = [self.schema.categories[f][int(c)] if c == c else None for c in mat[:, j]]
            else:
                cols[f] = mat[:, j]
        cols["label"] = self.labels
        cols.update(self.meta)
        return pa.table(cols)


def event_batches(events: list[Event], size: int = 500) -> Iterator[list[dict[str, Any]]]:
    """Events as wire dicts, in batches (for loading them into a running server)."""
    for i in range(0, len(events), size):
        yield [
            {
                "customer_id": e.customer_id,
                "type": e.type,
                "ts": e.ts,
                "properties": dict(e.properties),
            }
            for e in events[i : i + size]
        ]
