"""Compiling the catalog: every rule site of the config compiles against the names it may
see, a failure anywhere is reported with every other one in config order, group rules
are compiled once per group, levers multiply, and the indexes and version come out as
they always have (a catalog's version names it in the catalog store)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import yaml

from decisioning.config import Config
from decisioning.policy.catalog import Catalog, CatalogError
from decisioning.profile import ProfileSchema
from tests.conftest import EXAMPLE


def _data() -> dict[str, Any]:
    """The example config with a rule at every place the catalog compiles one."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["context"].append(
        {"name": "temp", "type": "numeric", "lookup": "context.weather[profile.region].temp_c"}
    )
    d = data["decisioning"]
    d["do_nothing_value"] = "0.001 * coalesce(profile.income, 0)"
    d["groups"] = {
        "cards": {"eligibility": "profile.age >= 18", "suitability": "profile.complaints_30d == 0"},
        "loans": {"applicability": "context.device != 'tablet'"},
    }
    d["group_levers"] = {"cards": 1.5}
    d["issue_levers"] = {"growth": 2.0}
    data["actions"][0]["issue"] = "growth"
    data["actions"][0]["applicability"] = "context.hour >= 8"
    return data


def _catalog(data: dict[str, Any]) -> Catalog:
    config = Config.model_validate(data)
    return Catalog(config, ProfileSchema(config))


def test_the_example_catalog_version_and_indexes_are_as_before() -> None:
    cat = _catalog(yaml.safe_load(EXAMPLE.read_text()))
    assert cat.version == "e69c99514389"  # (stored with every catalog: never changes)
    assert [a.id for a in cat.by_channel["sms"]] == [
        "cashback_card",
        "savings_account",
        "travel_insurance",
    ]
    assert [a.index for a in cat.actions] == list(range(20))
    assert cat.by_id["enable_2fa"].lever == 2.0 and cat.by_id["fee_waiver"].lever == 1.0
    assert {k: [t.id for t in v] for k, v in cat.triggers_on.items()} == {
        "cart_add": ["cart_abandoned"],
        "failed_login": ["failed_logins"],
        "address_change": ["address_changed"],
        "geofence_enter": ["store_visit"],
    }
    assert {k: [t.id for t in v] for k, v in cat.cancels.items()} == {
        "purchase": ["cart_abandoned"]
    }
    assert cat.trigger_by_id["cart_abandoned"].within == 1800.0
    assert cat.trigger_by_id["failed_logins"].crossing and cat.trigger_by_id["failed_logins"].when
    assert list(cat.outbound_rules) == ["call_center"]
    assert [w for _, w in cat.context_weights] == [1.2, 1.5, 1.3]
    assert cat.do_nothing_rule is None and cat.do_nothing_const == 0.0
    assert cat.derived_context == []
    assert cat.consent["email"][1] == "opt_out"


def test_every_rule_site_compiles_and_group_rules_are_shared() -> None:
    cat = _catalog(_data())
    travel, cashback, loan = (cat.by_id[a] for a in ("travel_card", "cashback_card", "car_loan"))
    assert [stage for stage, _ in travel.rules] == [
        "group eligibility",
        "eligibility",
        "applicability",
        "group suitability",
    ]
    assert travel.rules[0][1] is cashback.rules[0][1]  # compiled once for the group
    assert travel.eligibility is travel.rules[1][1]
    assert [stage for stage, _ in loan.rules] == ["eligibility", "group applicability"]
    assert travel.lever == 1.5 * 2.0 and cashback.lever == 1.5
    assert cat.by_id["personal_loan"].value_rule is not None
    assert cat.by_id["personal_loan"].value_const == 0.0 and travel.value_const == 120.0
    assert cat.do_nothing_rule is not None and cat.do_nothing_const == 0.0
    assert [name for name, _ in cat.derived_context] == ["temp"]
    assert cat.version != "e69c99514389"
    assert travel.start == -math.inf and travel.end == math.inf


def _broken() -> dict[str, Any]:
    """`_data()` with one bad rule at every place, in an order unlike the config's."""
    data = copy.deepcopy(_data())
    d = data["decisioning"]
    data["triggers"][1]["when"] = "profile.nope >= 3"
    d["context_weights"][0]["when"] = "context.placement =="
    d["outbound"]["rules"]["call_center"] = "action.nope"
    d["do_nothing_value"] = "action.value"  # (no action there)
    d["groups"]["cards"]["suitability"] = "profile.nope"
    data["context"][-1]["lookup"] = "action.value"
    data["actions"][4]["value"] = "action.value"  # (a value cannot read itself)
    data["actions"][1]["eligibility"] = "profile.age >>= 3"
    return data


def test_every_failure_is_reported_in_config_order() -> None:
    with pytest.raises(CatalogError) as e:
        _catalog(_broken())
    cards = "decisioning.groups.cards.suitability"
    assert [field for field, _ in e.value.problems()] == [
        cards,  # with each action of the group (the four cards) that tries it
        "actions[1].eligibility",
        cards,
        cards,
        cards,
        "actions[4].value",
        "decisioning.do_nothing_value",
        "decisioning.outbound.rules.call_center",
        "decisioning.context_weights[0].when",
        "context[2].lookup",
        "triggers[1].when",
    ]
    assert e.value.expression == "profile.nope"  # the first one's, for the message
