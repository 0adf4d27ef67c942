"""Contact policies against a brute-force oracle written from the README ("Contact
policies"), not from the code: a real Shard with every policy kind configured at once,
several customers, and random interleavings of decisions, outcomes (late and retried
ones too), clock advances, snapshots and crashes. After every decision each policy
holds for the customer, and nothing the policies allow is held back."""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.shard import OUTCOMES, Shard
from decisioning.config import Config
from decisioning.config.loader import config_from_dict
from tests.conftest import SMALL, examples
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import Clock

DAY = 86400.0
# Clock steps and outcome lags are multiples of TICK, a prime that divides no window
# (all whole days, under 41): the README does not say whether a window's edge is in
# or out, so no difference of two times ever lands on one.
TICK = 41.0

# id -> (group, channels, value, mandatory, suppress rules as (outcome, count, within
# days, for days or None)). No model is loaded, so every action has the default
# propensity and the rank is the value order.
ACTIONS: dict[str, tuple[str, tuple[str, ...], int, bool, tuple[Any, ...]]] = {
    "card": ("cards", ("web", "email"), 100, False, (("impression", 3, 7, 2),)),
    "gold": ("cards", ("web", "email"), 90, False, (("click", 1, 1, 3),)),
    "notice": ("cards", ("email",), 80, True, (("impression", 1, 1, None),)),
    "loan": ("loans", ("web", "email"), 70, False, (("reject", 1, 30, None),)),
    "save": ("loans", ("web",), 60, False, (("convert", 1, 7, 1), ("accept", 2, 2, None))),
    "tip": ("service", ("web", "email"), 10, False, ()),
}
RANKED = sorted(ACTIONS, key=lambda a: -ACTIONS[a][2])
CHANNEL_CAPS = {"email": {"per_day": 1, "per_week": 3}, "web": {"per_day": 3, "per_week": 5}}
GROUP_CAPS = {"cards": (3, 1), "loans": (2, 1)}  # group -> (count, within days)
CUSTOMERS = [f"c{i}" for i in range(3)]


def _config() -> Config:
    def suppress(rules: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [
            {"outcome": o, "count": n, "within": f"{w}d", **({"for": f"{f}d"} if f else {})}
            for o, n, w, f in rules
        ]

    actions = [
        {
            "id": a,
            "group": g,
            "channels": list(chs),
            "value": v,
            "mandatory": m,
            "suppress": suppress(rules),
        }
        for a, (g, chs, v, m, rules) in ACTIONS.items()
    ]
    caps = {g: {"count": n, "within": f"{w}d"} for g, (n, w) in GROUP_CAPS.items()}
    decisioning = {"default_propensity": 0.5, "channel_caps": CHANNEL_CAPS, "group_caps": caps}
    server = {**SMALL["server"], "fsync": "none"}  # the crashes here are the process's
    return config_from_dict(
        {**SMALL, "actions": actions, "decisioning": decisioning, "server": server}
    )


@dataclass
class Oracle:
    """What each customer was shown and did, and what the README says follows."""

    contacts: dict[str, list[tuple[float, str, list[str]]]] = field(default_factory=dict)
    # (decision id, action, kind) -> (customer, ts): an outcome counts once per key
    outcomes: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)

    def suppressed(self, c: str, action: str, now: float) -> bool:
        """`count` outcomes of a kind within `within` suppress the action until `for`
        (default `within`) after the last of them."""
        for kind, count, within, lasts in ACTIONS[action][4]:
            times = [
                ts
                for (_, a, k), (who, ts) in self.outcomes.items()
                if who == c and a == action and k == kind
            ]
            for some in itertools.combinations(sorted(times), count):
                if some[-1] - some[0] < within * DAY and now < some[-1] + (lasts or within) * DAY:
                    return True
        return False

    def capped(self, c: str, channel: str, now: float) -> bool:
        """At most `per_day` contacts in any 24 hours, `per_week` in any 7 days; a
        decision that showed at least one action is one contact."""
        for key, days in (("per_day", 1), ("per_week", 7)):
            cap = CHANNEL_CAPS.get(channel, {}).get(key)
            used = sum(
                1
                for ts, ch, _ in self.contacts.get(c, [])
                if ch == channel and now - ts < days * DAY
            )
            if cap is not None and used >= cap:
                return True
        return False

    def shown(self, c: str, group: str, now: float) -> int:
        """Actions of the group shown within the group cap's window."""
        within = GROUP_CAPS[group][1] * DAY
        return sum(
            ACTIONS[a][0] == group
            for ts, _, actions in self.contacts.get(c, [])
            if now - ts < within
            for a in actions
        )

    def allowed(self, c: str, action: str, channel: str, now: float, answer: list[str]) -> bool:
        """Whether a (not mandatory) action may join `answer`."""
        if self.capped(c, channel, now) or self.suppressed(c, action, now):
            return False
        return self.room(c, ACTIONS[action][0], now, answer) > 0

    def room(self, c: str, group: str, now: float, answer: list[str]) -> int:
        """How many more of the group may go with `answer` (a large number: no cap)."""
        if group not in GROUP_CAPS:
            return 1 << 30
        ours = sum(ACTIONS[a][0] == group for a in answer)
        return GROUP_CAPS[group][0] - self.shown(c, group, now) - ours

    def expected(self, c: str, channel: str, limit: int, now: float) -> list[str]:
        """The answer: in rank order, each action that the policies allow next to the
        ones before it. A mandatory action always goes, and it counts: in a group with
        no room left it takes the place of the group's lowest-ranked other action."""
        answer: list[str] = []
        for a in (a for a in RANKED if channel in ACTIONS[a][1]):
            if len(answer) == limit:
                break
            group, _, _, mandatory, _ = ACTIONS[a]
            if mandatory and self.room(c, group, now, answer) <= 0:
                others = [x for x in answer if ACTIONS[x][0] == group and not ACTIONS[x][3]]
                answer = [x for x in answer if x not in others[-1:]]
            if mandatory or self.allowed(c, a, channel, now, answer):
                answer.append(a)
        return answer

    def check(self, c: str, channel: str, limit: int, now: float, answer: list[str]) -> None:
        """Every policy holds for the answer, and it holds back nothing they allow."""
        free = [a for a in answer if not ACTIONS[a][3]]
        assert not (free and self.capped(c, channel, now)), f"{c}: {channel} is capped"
        for a in free:
            assert not self.suppressed(c, a, now), f"{c}: {a} is suppressed"
        for g in GROUP_CAPS:  # mandatory actions count, and only they may exceed a cap
            if any(ACTIONS[a][0] == g for a in free):
                assert self.room(c, g, now, answer) >= 0, f"{c}: too many of {g}: {answer}"
        assert answer == self.expected(c, channel, limit, now), c


# (action, outcome): every pair, and the pairs a rule counts more often
PAIRS = [(a, k) for a in RANKED for k in OUTCOMES] + [
    (a, rule[0]) for a in RANKED for rule in ACTIONS[a][4] for _ in range(4)
]
WHO = st.sampled_from([CUSTOMERS[0]] * 3 + CUSTOMERS[1:])  # one busy customer, two quieter
DECIDE = st.tuples(
    st.just("decide"),
    WHO,
    st.sampled_from(["web", "email"]),
    st.integers(1, 4),
    st.sampled_from([True, True, False]),  # the client reports an impression of each
    st.none() | st.tuples(st.integers(0, 3), st.sampled_from(OUTCOMES)),  # and one more
)
# an outcome of the action in one of the customer's answers (i-th latest), late
OUTCOME = st.tuples(
    st.just("outcome"),
    WHO,
    st.sampled_from(PAIRS),
    st.integers(0, 3),
    st.sampled_from([0, 1, 88, 2110, 4220]),
)
WAIT = st.tuples(st.just("wait"), st.sampled_from([1, 88, 1054, 2110, 2110, 4220, 4220, 14760]))
STEPS = st.lists(
    st.one_of(DECIDE, OUTCOME, WAIT, DECIDE, st.tuples(st.just("retry"), st.integers(0, 50))),
    min_size=40,
    max_size=100,
)


class Run:
    """A shard with a WAL, the oracle beside it, and what a client would remember."""

    def __init__(self, log_dir: str | None) -> None:
        self.cfg = _config()
        self.clock = Clock()
        self.log_dir = log_dir
        self.shard = Shard(0, self.cfg, clock=self.clock, log_dir=log_dir)
        self.oracle = Oracle()
        self.answers: dict[str, list[tuple[str, float, list[str]]]] = {}  # non-empty ones
        self.sent: list[dict[str, Any]] = []  # outcomes, to send again

    def decide(
        self, c: str, channel: str, limit: int, seen: bool, then: tuple[int, str] | None
    ) -> None:
        now = self.clock.t
        d = edge.decide(self.shard, {"customer_id": c, "channel": channel, "limit": limit})
        answer = [a["action_id"] for a in d["actions"]]
        self.oracle.check(c, channel, limit, now, answer)
        if answer:
            self.oracle.contacts.setdefault(c, []).append((now, channel, answer))
            self.answers.setdefault(c, []).append((d["decision_id"], now, answer))
            if seen:
                self._send(c, [(d["decision_id"], a, "impression", now) for a in answer])
            if then is not None:
                self._send(c, [(d["decision_id"], answer[then[0] % len(answer)], then[1], now)])

    def outcome(self, c: str, pair: tuple[str, str], i: int, lag: int) -> None:
        action, kind = pair
        showed = [(did, ts) for did, ts, answer in self.answers.get(c, []) if action in answer]
        if showed:
            did, ts = showed[-1 - i % len(showed)]
            at = max(ts, self.clock.t - lag * TICK)  # late, but not before the decision
            self._send(c, [(did, action, kind, at)])

    def _send(self, c: str, outcomes: list[tuple[str, str, str, float]]) -> None:
        batch = [
            {"decision_id": did, "action_id": a, "outcome": kind, "ts": ts}
            for did, a, kind, ts in outcomes
        ]
        edge.record_outcomes(self.shard, batch)
        self.sent.extend(batch)
        for did, a, kind, ts in outcomes:
            self.oracle.outcomes.setdefault((did, a, kind), (c, ts))

    def retry(self, i: int) -> None:
        if self.sent:
            edge.record_outcomes(self.shard, [self.sent[i % len(self.sent)]])

    def wait(self, ticks: int) -> None:
        self.clock.t += ticks * TICK

    def crash(self) -> None:
        """A new shard from the old one's snapshot and WAL (no close: a crash), which
        must hold the same contact history."""
        assert self.log_dir is not None
        again = Shard(0, self.cfg, clock=self.clock, log_dir=self.log_dir)
        now, horizon = self.clock.t, self.shard.policies.horizon
        for c in CUSTOMERS:
            assert again.contacts.of(c, now, horizon) == self.shard.contacts.of(c, now, horizon)
        self.shard = again


@examples(100)
@given(steps=STEPS, crash=st.none() | st.tuples(st.integers(0, 29), st.integers(0, 30)))
def test_every_policy_holds_for_every_customer(
    steps: list[tuple[Any, ...]], crash: tuple[int, int] | None
) -> None:
    """With `crash` (n, m): a WAL, a snapshot after step m (if m < n), a crash after
    step n; the recovered shard goes on."""
    with tempfile.TemporaryDirectory() as log_dir:
        run = Run(log_dir if crash else None)
        try:
            for n, (op, *args) in enumerate(steps):
                getattr(run, op)(*args)
                run.shard.flush()  # what the actor does before it answers
                if crash and n == crash[1] < crash[0]:
                    run.shard.snapshot()
                if crash and n == crash[0]:
                    run.crash()
        finally:
            run.shard.close()
