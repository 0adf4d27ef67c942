"""Each check across config sections refuses what it should, with its own message, and
several problems always report the same one first (the checks run in a fixed order)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from decisioning.config.checks import CROSS_CHECKS
from decisioning.config.loader import config_from_dict
from decisioning.errors import ConfigError
from tests.conftest import SMALL

Patch = Callable[[dict[str, Any]], None]


def _attribute(name: str) -> Patch:
    return lambda d: d["profile"]["attributes"].append({"name": name, "type": "numeric"})


def _set(path: str, value: Any) -> Patch:
    def patch(d: dict[str, Any]) -> None:
        *heads, last = path.split(".")
        for h in heads:
            d = d.setdefault(h, {})
        d[last] = value

    return patch


CASES: list[tuple[str, Patch, str]] = [
    (
        "twice",
        _attribute("views_1h"),
        "feature name 'views_1h' is used twice (attribute, aggregate)",
    ),
    ("reserved", _attribute("consent_web"), "feature name 'consent_web' uses a reserved prefix"),
    ("channel", _attribute("channel"), "feature name 'channel' uses a reserved prefix"),
    (
        "action ids",
        lambda d: d["actions"].append(dict(d["actions"][0])),
        "duplicate action ids: card",
    ),
    (
        "admin port",
        lambda d: (_set("server.admin_port", 9999)(d), _set("auth.admin_api", False)(d)),
        "server.admin_port is set but auth.admin_api is false: serve the admin API on its "
        "own port or turn it off, not both",
    ),
    (
        "groups",
        _set("decisioning.groups", {"pets": {}}),
        "decisioning.groups names no action's: pets",
    ),
    (
        "group caps",
        _set("decisioning.group_caps", {"pets": {"count": 1, "within": "1d"}}),
        "decisioning.group_caps names no action's: pets",
    ),
    (
        "group levers",
        _set("decisioning.group_levers", {"pets": 2.0}),
        "decisioning.group_levers names no action's: pets",
    ),
    (
        "issue levers",
        _set("decisioning.issue_levers", {"grow": 2.0}),
        "decisioning.issue_levers names no action's: grow",
    ),
    (
        "outbound reserved",
        lambda d: d["channels"].append("outbound"),
        "'outbound' is reserved (decide with channel: outbound)",
    ),
    (
        "outbound channels",
        _set("decisioning.outbound", {"channels": ["web"], "costs": {"sms": 1.0}}),
        "decisioning.outbound names unknown channels: sms",
    ),
    (
        "preference",
        _set("decisioning.outbound", {"preference_attribute": "age"}),
        "decisioning.outbound.preference_attribute 'age': not a categorical profile attribute",
    ),
    (
        "trigger ids",
        _set("triggers", [{"id": "t", "event": "login", "channel": "web"}] * 2),
        "duplicate trigger ids: t",
    ),
    (
        "trigger outbound",
        _set("triggers", [{"id": "t", "event": "login", "channel": "outbound"}]),
        "trigger 't' decides outbound, but decisioning.outbound.channels is empty",
    ),
    (
        "trigger channel",
        _set("triggers", [{"id": "t", "event": "login", "channel": "sms"}]),
        "trigger 't': unknown channel 'sms'",
    ),
    (
        "identity links",
        _set("identity", {"kinds": ["email_hash"], "links": {"login": ["device_id"]}}),
        "identity.links.login names unknown identifier kinds: device_id (add them to "
        "identity.kinds)",
    ),
    (
        "sinks",
        _set("delivery.sinks", {"sms": {"parquet": {"path": "/tmp/x"}}}),
        "delivery.sinks names unknown channels: sms",
    ),
    (
        "channel caps",
        _set("decisioning.channel_caps", {"sms": {"per_day": 1}}),
        "decisioning.channel_caps names unknown channels: sms",
    ),
    (
        "consent",
        _set("decisioning.consent", {"sms": "opt_in"}),
        "decisioning.consent names unknown channels: sms",
    ),
    (
        "action channels",
        lambda d: d["actions"][0]["channels"].append("sms"),
        "action 'card' names unknown channels: sms",
    ),
]


def _refused(*patches: Patch) -> list[tuple[str, str]]:
    data = copy.deepcopy(SMALL)
    for patch in patches:
        patch(data)
    with pytest.raises(ConfigError) as e:
        config_from_dict(data, "small.yaml")
    return e.value.problems


@pytest.mark.parametrize(("patch", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_check_refuses_with_its_message(patch: Patch, message: str) -> None:
    assert _refused(patch) == [("(top level)", message)]


def test_the_first_problem_in_check_order_is_reported() -> None:
    """Problems caught by the last and the first check: the first check's message."""
    last, first = CASES[-1], CASES[0]
    assert _refused(last[1], first[1]) == [("(top level)", first[2])]
    assert len(CROSS_CHECKS) == 9
