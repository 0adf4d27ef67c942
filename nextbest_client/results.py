"""Typed answers: a decision and its actions, a profile, what a write accepted. Each
keeps the answer's `raw` dict too, so a field the server adds later is never lost."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Accepted", "Action", "Decision", "Profile"]


@dataclass(frozen=True, slots=True)
class Action:
    """One recommended action: its group and channel, propensity × value → priority."""

    action_id: str
    group: str
    channel: str
    propensity: float | None
    value: float | None
    priority: float | None
    model_version: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, a: Mapping[str, Any]) -> Action:
        return cls(
            str(a["action_id"]),
            str(a.get("group", "")),
            str(a.get("channel", "")),
            a.get("propensity"),
            a.get("value"),
            a.get("priority"),
            a.get("model_version"),
            a,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """`POST /v1/decide`: `actions` best first; empty means *do nothing*. `explanation`
    is there when the request asked `explain`."""

    decision_id: str
    customer_id: str
    channel: str
    placement: str | None
    model_version: str | None
    variant: str | None
    actions: list[Action]
    explanation: list[dict[str, Any]] | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Decision:
        return cls(
            str(d["decision_id"]),
            str(d["customer_id"]),
            str(d["channel"]),
            d.get("placement"),
            d.get("model_version"),
            d.get("variant"),
            [Action.from_wire(a) for a in d.get("actions", ())],
            d.get("explanation"),
            d,
        )


@dataclass(frozen=True, slots=True)
class Profile:
    """`GET /v1/profiles/{id}`: the live profile and the shard that answered it."""

    customer_id: str
    known: bool
    attributes: dict[str, Any]
    aggregates: dict[str, Any]
    consent: dict[str, Any]
    recent_decisions: list[dict[str, Any]]
    shard: int | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, p: Mapping[str, Any]) -> Profile:
        return cls(
            str(p["customer_id"]),
            bool(p.get("known", False)),
            dict(p.get("attributes") or {}),
            dict(p.get("aggregates") or {}),
            dict(p.get("consent") or {}),
            list(p.get("recent_decisions") or ()),
            p.get("shard"),
            p,
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a write accepted (`POST /v1/events`, `/v1/outcomes`), summed over the
    requests one call made; `links_pending`: identifier links that could not finish."""

    accepted: int
    links_pending: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_wire(cls, a: Mapping[str, Any]) -> Accepted:
        return cls(int(a.get("accepted", 0)), list(a.get("links_pending") or ()))

    @classmethod
    def total(cls, parts: Iterable[Accepted]) -> Accepted:
        parts = list(parts)
        return cls(sum(p.accepted for p in parts), [x for p in parts for x in p.links_pending])
