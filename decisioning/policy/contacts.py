"""Contact policies, exact because each customer has one writer: the shard.

A shard keeps, per customer, the recent contacts (decisions that showed actions, by
channel) and outcomes (impression, click, accept, reject, convert, by action), no older
than the longest policy needs and at most `MAX_ENTRIES`. Before a decision it answers
which candidates the policies remove:

- an action's `suppress` rules: `count` outcomes of a kind for that action within
  `within` suppress it until `for` (default `within`) after the last of them;
- `channel_caps`: at most `per_day` / `per_week` contacts on the channel (a decision
  that showed at least one action is one contact);
- `group_caps`: at most `count` actions of the group shown within `within`.

Mandatory actions are never removed by these limits, but they are counted. The log is
rebuilt from the WAL on recovery and carried in snapshots.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from decisioning.config import Config

__all__ = ["MAX_ENTRIES", "ContactLog", "Limits", "Policies"]

MAX_ENTRIES = 512  # per customer: enough for any sane policy, bounded whatever happens
SHOWN = "shown"  # an action shown (one per action of a decision)
CONTACT = "contact"  # a decision that showed actions (one per decision)
DAY, WEEK = 86400.0, 7 * 86400.0

Entry = tuple[float, str, str, str]  # ts, action id, kind (contact, shown, an outcome), channel


@dataclass(frozen=True, slots=True)
class Limits:
    """What the policies remove from one decision."""

    channel: str | None = None  # why the channel is capped (None: it is not)
    actions: dict[str, str] = field(default_factory=dict)  # action id -> why suppressed
    groups: dict[str, str] = field(default_factory=dict)  # group -> why capped
    group_left: dict[str, int] = field(default_factory=dict)  # group -> how many more may go
    exhausted: dict[str, str] = field(default_factory=dict)  # budgeted action -> why (all go)

    def why(self, action_id: str, group: str) -> str | None:
        return self.channel or self.actions.get(action_id) or self.groups.get(group)


class Policies:
    """The contact policies of a catalog, ready to check."""

    def __init__(self, config: Config) -> None:
        d = config.decisioning
        self.suppress = {
            a.id: [(s.outcome, s.count, s.within, s.for_ or s.within) for s in a.suppress]
            for a in config.actions
            if a.suppress
        }
        self.group_of = {a.id: a.group for a in config.actions}
        self.channel_caps = {
            ch: [(n, w) for n, w in ((c.per_day, DAY), (c.per_week, WEEK)) if n is not None]
            for ch, c in d.channel_caps.items()
        }
        self.group_caps = {g: (c.count, c.within) for g, c in d.group_caps.items()}
        spans = [w + f for rules in self.suppress.values() for _, _, w, f in rules]
        spans += [w for caps in self.channel_caps.values() for _, w in caps]
        spans += [w for _, w in self.group_caps.values()]
        self.horizon = max(spans, default=0.0)  # older entries can never matter

    @property
    def active(self) -> bool:
        return self.horizon > 0

    def limits(self, entries: list[Entry], now: float, channel: str) -> Limits:
        """What the policies remove for a customer with `entries` (oldest first)."""
        if not self.active:
            return Limits()
        capped = None
        for n, window in self.channel_caps.get(channel, ()):
            used = sum(
                1
                for ts, _, kind, ch in entries
                if kind == CONTACT and ch == channel and _within(ts, now, window)
            )
            if used >= n:
                capped = (
                    f"channel cap: {used} contacts on {channel} in {_span(window)} (at most {n})"
                )
                break
        actions: dict[str, str] = {}
        for action_id, rules in self.suppress.items():
            for outcome, count, within, lasts in rules:
                times = [ts for ts, a, kind, _ in entries if a == action_id and kind == outcome]
                until = _suppressed_until(times, count, within, lasts)
                if until is not None and now < until:
                    actions[action_id] = (
                        f"suppressed: {count} {outcome} within {_span(within)}, for {_span(lasts)}"
                    )
                    break
        groups: dict[str, str] = {}
        left: dict[str, int] = {}
        for group, (n, window) in self.group_caps.items():
            shown = sum(
                1
                for ts, a, kind, _ in entries
                if kind == SHOWN and self.group_of.get(a) == group and _within(ts, now, window)
            )
            if shown >= n:
                groups[group] = f"group cap: {shown} of {group} in {_span(window)} (at most {n})"
            else:
                left[group] = n - shown
        return Limits(capped, actions, groups, left)


def _within(ts: float, now: float, window: float) -> bool:
    return now - window < ts <= now


def _suppressed_until(times: list[float], count: int, within: float, lasts: float) -> float | None:
    """The latest end of a suppression: `count` of `times` within `within`, lasting
    `lasts` from the last of them (None when never triggered)."""
    times = sorted(times)
    end = None
    for j in range(count - 1, len(times)):
        if times[j] - times[j - count + 1] < within:
            end = times[j] + lasts
    return end


def _span(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class ContactLog:
    """Per customer: recent contacts and outcomes, oldest first, bounded."""

    def __init__(self) -> None:
        self.entries: dict[str, list[Entry]] = {}

    def of(self, customer_id: str, now: float, horizon: float) -> list[Entry]:
        """The customer's entries, pruned to the policies' horizon."""
        entries = self.entries.get(customer_id)
        if not entries:
            return []
        if horizon > 0 and entries[0][0] <= now - horizon:
            keep = bisect.bisect_right(entries, (now - horizon, "\uffff"))
            del entries[:keep]
            if not entries:
                del self.entries[customer_id]
        return entries

    def add(self, customer_id: str, items: Iterable[Entry]) -> None:
        entries = self.entries.setdefault(customer_id, [])
        for item in items:
            bisect.insort(entries, item)  # outcomes may come in a little late
        if len(entries) > MAX_ENTRIES:
            del entries[: len(entries) - MAX_ENTRIES]

    def shown(self, customer_id: str, ts: float, channel: str, actions: Iterable[str]) -> None:
        """A decision showed `actions` on `channel`: one contact, and each action shown."""
        shown = [(ts, a, SHOWN, channel) for a in actions]
        if shown:
            self.add(customer_id, [(ts, "", CONTACT, channel), *shown])

    def outcome(self, customer_id: str, ts: float, action_id: str, kind: str) -> None:
        self.add(customer_id, [(ts, action_id, kind, "")])

    def forget(self, customer_id: str) -> None:
        self.entries.pop(customer_id, None)

    def rows(self) -> list[tuple[str, float, str, str, str]]:
        """Every entry as (customer_id, ts, action_id, kind, channel), for snapshots."""
        return [(c, *e) for c, es in self.entries.items() for e in es]

    def load(self, rows: Iterable[tuple[str, float, str, str, str]]) -> None:
        for c, ts, a, kind, ch in rows:
            self.entries.setdefault(c, []).append((ts, a, kind, ch))
        for es in self.entries.values():
            es.sort()
