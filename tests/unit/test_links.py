"""Open links: sealed, tamper-evident, expiring, and minted for leased messages."""

from __future__ import annotations

import base64

import pytest

from actors.shard import Shard
from decisioning.config.loader import config_from_dict
from decisioning.delivery.links import LinkError, OpenLink, link_key, open_link, seal_link
from tests.conftest import SMALL
from tests.unit.test_decide import NOW, Clock
from tests.unit.test_triggers import ACTIONS, TRIGGERS, ev


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NB_TEST_LINKS_KEY", "a secret for the tests")


def test_a_link_opens_only_unchanged_with_its_key_and_in_time() -> None:
    key = link_key("NB_TEST_LINKS_KEY")
    assert key is not None and len(key) == 32
    link = OpenLink("customer-42", "email", "footer", "d-0001-ab", NOW + 60)
    token = seal_link(key, link)
    assert open_link(key, token, NOW) == link
    assert b"customer-42" not in base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert seal_link(key, link) != token  # a fresh nonce each time
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (tampered, token[:20], "not-a-token", "", "x" * 2000):
        with pytest.raises(LinkError) as e:
            open_link(key, bad, NOW)
        assert e.value.code == "invalid_link"
    with pytest.raises(LinkError):
        open_link(bytes(32), token, NOW)  # another deployment's key
    with pytest.raises(LinkError) as e:
        open_link(key, token, NOW + 60)
    assert e.value.code == "link_expired"


def test_no_variable_no_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NB_TEST_LINKS_KEY")
    assert link_key("NB_TEST_LINKS_KEY") is None and link_key(None) is None


def test_leased_messages_carry_a_link_to_their_customer_and_channel() -> None:
    data = {**SMALL, "actions": ACTIONS, "triggers": TRIGGERS}
    cfg = config_from_dict(
        {
            **data,
            "decisioning": {"default_propensity": 0.5},
            "delivery": {"link_key_env": "NB_TEST_LINKS_KEY", "link_ttl": "1h"},
        }
    )
    shard = Shard(0, cfg, clock=Clock())
    shard.apply_events([ev("address_change", NOW)])
    [m] = shard.lease_outbound("email", 10)
    key = link_key("NB_TEST_LINKS_KEY")
    assert key is not None
    link = open_link(key, m["open_token"], NOW)
    assert (link.customer_id, link.channel, link.message_id) == ("c", "email", m["id"])
    assert link.expires == NOW + 3600
    plain = config_from_dict({**data, "decisioning": {"default_propensity": 0.5}})
    other = Shard(0, plain, clock=Clock())
    other.apply_events([ev("address_change", NOW)])
    assert other.lease_outbound("email", 10)[0]["open_token"] is None
