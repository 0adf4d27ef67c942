from __future__ import annotations

from pathlib import Path

import pytest

from decisioning.config.loader import config_from_dict, load_config
from decisioning.errors import ConfigError
from tests.conftest import EXAMPLE, SMALL


def test_example_config_loads() -> None:
    c = load_config(EXAMPLE, {})
    assert len(c.actions) == 20
    assert c.server.port == 8000


def test_env_overrides_server_settings() -> None:
    c = load_config(
        EXAMPLE, {"NEXTBEST_SHARDS": "4", "NEXTBEST_PORT": "9000", "NEXTBEST_DATA_DIR": "/tmp/x"}
    )
    assert (c.server.shards, c.server.port, c.server.data_dir) == (4, 9000, "/tmp/x")
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, {"NEXTBEST_SHARDS": "many"})
    assert "server.shards" in str(e.value)


def test_shard_state_needs_a_posix_path_and_resources_come_as_json() -> None:
    from actors.remote import shard_dir

    env = {"NEXTBEST_DATA_DIR": "s3://bank-nextbest/prod"}
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE, env)  # the registry may live there, the WAL may not
    assert "server: data_dir (no state_dir) 's3://" in str(e.value)
    assert "set state_dir" in str(e.value)
    c = load_config(
        EXAMPLE,
        {
            **env,
            "NEXTBEST_STATE_DIR": "/mnt/efs/nextbest",
            "NEXTBEST_SHARD_RESOURCES": '{"nextbest_shard": 0.001}',
        },
    )
    assert shard_dir(c, 3) == "/mnt/efs/nextbest/3"
    assert c.server.shard_resources == {"nextbest_shard": 0.001}
    local = load_config(EXAMPLE, {"NEXTBEST_DATA_DIR": "file:///var/nextbest"})
    assert shard_dir(local, 0) == "/var/nextbest/shards/0"
    off = load_config(EXAMPLE, {**env, "NEXTBEST_DURABLE": "false"})
    assert shard_dir(off, 0) is None


def _problem(data: dict, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_dict(data, "bank.yaml")
    msg = str(e.value)
    assert "bank.yaml" in msg
    return msg


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"colour": "red"}, "colour: unknown field"),
        ({"server": {"shards": 0}}, "server.shards: Input should be greater than or equal to 1"),
        ({"channels": []}, "channels: List should have at least 1 item"),
    ],
)
def test_top_level_problems_name_the_field(patch: dict, fragment: str, tmp_path: Path) -> None:
    assert fragment in _problem({**SMALL, **patch}, tmp_path)


def test_aggregate_and_action_problems(tmp_path: Path) -> None:
    aggs = [{"name": "x", "kind": "sum", "event": "purchase"}]
    msg = _problem({**SMALL, "profile": {"aggregates": aggs}}, tmp_path)
    assert "profile.aggregates[0]" in msg and "needs 'property'" in msg
    aggs = [{"name": "x", "kind": "count", "event": "e", "window": "fortnight"}]
    assert "not a duration" in _problem({**SMALL, "profile": {"aggregates": aggs}}, tmp_path)
    actions = [{**SMALL["actions"][0], "channels": ["fax"]}]
    assert "unknown channels: fax" in _problem({**SMALL, "actions": actions}, tmp_path)
    actions = [SMALL["actions"][0], SMALL["actions"][0]]
    assert "duplicate action ids: card" in _problem({**SMALL, "actions": actions}, tmp_path)


def test_bad_rule_is_reported_with_field_line_and_column(tmp_path: Path) -> None:
    actions = [{**SMALL["actions"][0], "eligibility": "profile.age >= 18 and profile.height > 2"}]
    msg = _problem({**SMALL, "actions": actions}, tmp_path)
    assert "actions[0].eligibility" in msg
    assert "line 1, column 23" in msg
    assert "unknown field 'profile.height'" in msg


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels: [web\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "(yaml)" in str(e.value)


def test_tls_goes_to_serve_as_a_pair() -> None:
    from serving.server import http_options

    tls = {"NEXTBEST_TLS_CERTFILE": "/etc/nb/cert.pem", "NEXTBEST_TLS_KEYFILE": "/etc/nb/key.pem"}
    opts = http_options(load_config(EXAMPLE, tls))
    assert opts["ssl_certfile"] == "/etc/nb/cert.pem" and opts["ssl_keyfile"] == "/etc/nb/key.pem"
    assert "ssl_certfile" not in http_options(load_config(EXAMPLE, {}))
    with pytest.raises(ConfigError, match="go together"):
        load_config(EXAMPLE, {"NEXTBEST_TLS_CERTFILE": "/etc/nb/cert.pem"})
