"""Checks across sections, run once every section has validated itself.

Each check names one rule of consistency between sections (a feature name used twice, a
channel that no section declares...) and raises ValueError with the message the config
author sees. `CROSS_CHECKS` runs them in a fixed order, so a config with several
problems always reports the same one first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from decisioning.config.policy import OUTBOUND

if TYPE_CHECKING:
    from decisioning.config.tree import Config

__all__ = ["CROSS_CHECKS"]


def _duplicates(values: Iterable[str]) -> list[str]:
    listed = list(values)
    return sorted({v for v in listed if listed.count(v) > 1})


def feature_names_are_unique(c: Config) -> None:
    """Attributes and aggregates share one feature namespace, apart from reserved ones."""
    seen: dict[str, str] = {}
    names = [("attribute", a.name) for a in c.profile.attributes]
    names += [("aggregate", a.name) for a in c.profile.aggregates]
    for kind, name in names:
        if name in seen:
            raise ValueError(f"feature name {name!r} is used twice ({seen[name]}, {kind})")
        if name.startswith(("consent_", "action_", "context_")) or name == "channel":
            raise ValueError(f"feature name {name!r} uses a reserved prefix")
        seen[name] = kind


def action_ids_are_unique(c: Config) -> None:
    dupes = _duplicates(a.id for a in c.actions)
    if dupes:
        raise ValueError(f"duplicate action ids: {', '.join(dupes)}")


def admin_port_needs_admin_api(c: Config) -> None:
    if c.server.admin_port is not None and not c.auth.admin_api:
        raise ValueError(
            "server.admin_port is set but auth.admin_api is false: serve the admin API "
            "on its own port or turn it off, not both"
        )


def decisioning_names_known_groups(c: Config) -> None:
    """Per-group and per-issue settings name groups and issues some action has."""
    groups = {a.group for a in c.actions}
    issues = {a.issue for a in c.actions if a.issue}
    for field, keys, known_keys in (
        ("groups", c.decisioning.groups, groups),
        ("group_caps", c.decisioning.group_caps, groups),
        ("group_levers", c.decisioning.group_levers, groups),
        ("issue_levers", c.decisioning.issue_levers, issues),
    ):
        stray = sorted(set(keys) - known_keys)
        if stray:
            raise ValueError(f"decisioning.{field} names no action's: {', '.join(stray)}")


def outbound_is_reserved(c: Config) -> None:
    if OUTBOUND in c.channels:
        raise ValueError(f"{OUTBOUND!r} is reserved (decide with channel: {OUTBOUND})")


def outbound_names_known_channels(c: Config) -> None:
    """Outbound channel choice names declared channels and a categorical preference."""
    ob = c.decisioning.outbound
    stray_ch = sorted((set(ob.channels) | set(ob.costs) | set(ob.rules)) - set(c.channels))
    if stray_ch:
        raise ValueError(f"decisioning.outbound names unknown channels: {', '.join(stray_ch)}")
    attrs = {a.name: a for a in c.profile.attributes}
    pref = ob.preference_attribute
    if pref is not None and (pref not in attrs or attrs[pref].type != "categorical"):
        raise ValueError(
            f"decisioning.outbound.preference_attribute {pref!r}: not a "
            "categorical profile attribute"
        )


def triggers_are_unique_and_routable(c: Config) -> None:
    """Trigger ids are unique, and each decides for a channel that can be decided."""
    dupes = _duplicates(t.id for t in c.triggers)
    if dupes:
        raise ValueError(f"duplicate trigger ids: {', '.join(dupes)}")
    for t in c.triggers:
        if t.channel == OUTBOUND and not c.decisioning.outbound.channels:
            raise ValueError(
                f"trigger {t.id!r} decides outbound, but decisioning.outbound.channels is empty"
            )
        if t.channel != OUTBOUND and t.channel not in c.channels:
            raise ValueError(f"trigger {t.id!r}: unknown channel {t.channel!r}")


def identity_links_name_known_kinds(c: Config) -> None:
    for event, kinds in c.identity.links.items():
        stray_kinds = sorted(set(kinds) - set(c.identity.kinds))
        if stray_kinds:
            raise ValueError(
                f"identity.links.{event} names unknown identifier kinds: "
                f"{', '.join(stray_kinds)} (add them to identity.kinds)"
            )


def per_channel_settings_name_known_channels(c: Config) -> None:
    """Sinks, contact caps, consent and every action name declared channels only."""
    sunk = sorted(set(c.delivery.sinks) - set(c.channels))
    if sunk:
        raise ValueError(f"delivery.sinks names unknown channels: {', '.join(sunk)}")
    capped = sorted(set(c.decisioning.channel_caps) - set(c.channels))
    if capped:
        raise ValueError(f"decisioning.channel_caps names unknown channels: {', '.join(capped)}")
    unknown = sorted(set(c.decisioning.consent) - set(c.channels))
    if unknown:
        raise ValueError(f"decisioning.consent names unknown channels: {', '.join(unknown)}")
    known = set(c.channels)
    for a in c.actions:
        bad = [ch for ch in a.channels if ch not in known]
        if bad:
            raise ValueError(f"action {a.id!r} names unknown channels: {', '.join(bad)}")


CROSS_CHECKS: tuple[Callable[[Config], None], ...] = (
    feature_names_are_unique,
    action_ids_are_unique,
    admin_port_needs_admin_api,
    decisioning_names_known_groups,
    outbound_is_reserved,
    outbound_names_known_channels,
    triggers_are_unique_and_routable,
    identity_links_name_known_kinds,
    per_channel_settings_name_known_channels,
)
