"""Where the admin API is served: settings that contradict each other are refused with
a message, and the CLI calls the admin port when there is one."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from decisioning.config.loader import load_config
from decisioning.errors import ConfigError
from serving.admin import on_channel_port
from serving.cli import app
from tests.conftest import EXAMPLE


def _load(**env: str) -> object:
    return load_config(EXAMPLE, {f"NEXTBEST_{k.upper()}": v for k, v in env.items()})


def test_admin_routes_are_on_the_channel_port_unless_off_or_moved() -> None:
    assert on_channel_port(_load())
    assert not on_channel_port(_load(admin_port="9001"))
    assert not on_channel_port(_load(auth_admin_api="false"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"port": "8000", "admin_port": "8000"}, "admin_port 8000 is one of the ports"),
        (
            {"port": "8000", "admin_port": "8001"},
            "admin_port 8001 is one of the ports",
        ),  # 2nd replica
        ({"port": "8000", "admin_port": "8100"}, "admin_port 8100 is one of the ports"),  # proxy
        ({"serving_path": "proxy", "port": "8000", "admin_port": "8000"}, "is one of the ports"),
        ({"admin_port": "9001", "auth_admin_api": "false"}, "not both"),
    ],
)
def test_contradicting_admin_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(**env)


def test_a_free_admin_port_is_accepted() -> None:
    cfg = _load(port="8000", admin_port="8001", serving_path="proxy")
    assert cfg.server.admin_port == 8001 and cfg.server.admin_host == "127.0.0.1"


def test_cli_admin_commands_call_the_admin_port(tmp_path: object) -> None:
    env = {
        "NEXTBEST_DATA_DIR": str(tmp_path),
        "NEXTBEST_PORT": "1",
        "NEXTBEST_ADMIN_PORT": "3",
        "NEXTBEST_ADMIN_HOST": "0.0.0.0",  # a wildcard bind address is called on localhost
    }
    r = CliRunner().invoke(app, ["status", "--config", str(EXAMPLE)], env=env)
    assert r.exit_code == 1
    assert "cannot reach the server at http://127.0.0.1:3" in r.output
