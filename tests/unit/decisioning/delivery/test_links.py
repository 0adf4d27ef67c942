"""Open links: sealed, tamper-evident, expiring, and minted for leased messages."""

from __future__ import annotations

import base64

import pytest

from actors.shard import Shard
from decisioning.config import Config, Secrets
from decisioning.config.loader import config_from_dict
from decisioning.delivery.links import LinkError, OpenLink, open_link, seal_link
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.actors.shard.test_triggers import ACTIONS, TRIGGERS, ev
from tests.unit.decisioning.policy.test_decide import NOW, Clock

ENVIRON = {"NB_TEST_LINKS_KEY": "a secret for the tests"}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NB_TEST_LINKS_KEY", ENVIRON["NB_TEST_LINKS_KEY"])  # the shard's own


def _linked(link_key_env: str | None = "NB_TEST_LINKS_KEY") -> Config:
    data = {**SMALL, "actions": ACTIONS, "triggers": TRIGGERS}
    delivery = {"link_key_env": link_key_env, "link_ttl": "1h"} if link_key_env else {}
    return config_from_dict(
        {**data, "decisioning": {"default_propensity": 0.5}, "delivery": delivery}
    )


def test_a_link_opens_only_unchanged_with_its_key_and_in_time() -> None:
    key = Secrets.resolve(_linked(), ENVIRON).link_key
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


def test_no_variable_no_links() -> None:
    assert Secrets.resolve(_linked(), {}).link_key is None
    assert Secrets.resolve(_linked(), {"NB_TEST_LINKS_KEY": ""}).link_key is None
    assert Secrets.resolve(_linked(None), ENVIRON).link_key is None


def test_leased_messages_carry_a_link_to_their_customer_and_channel() -> None:
    shard = Shard(0, _linked(), clock=Clock())
    edge.apply_events(shard, [ev("address_change", NOW)])
    [m] = edge.lease_outbound(shard, "email", 10)
    key = Secrets.resolve(_linked(), ENVIRON).link_key
    assert key is not None
    link = open_link(key, m["open_token"], NOW)
    assert (link.customer_id, link.channel, link.message_id) == ("c", "email", m["id"])
    assert link.expires == NOW + 3600
    other = Shard(0, _linked(None), clock=Clock())
    edge.apply_events(other, [ev("address_change", NOW)])
    assert edge.lease_outbound(other, "email", 10)[0]["open_token"] is None
