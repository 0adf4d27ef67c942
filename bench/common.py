"""What every part of the bench shares: the API key its requests carry, the config it
runs (the demo catalog, every action on the web channel, auth on), a free port."""

from __future__ import annotations

import socket

from decisioning.config import SCOPES, Config
from decisioning.config.loader import config_from_dict
from decisioning.profile import ProfileSchema
from serving.auth import new_key, sha256_hex

__all__ = [
    "BENCH_HEADERS",
    "BENCH_KEY",
    "NOOP_PORTS",
    "bench_config",
    "config40",
    "free_port",
]

NOOP_PORTS = 10
BENCH_KEY = new_key()
BENCH_HEADERS = {"authorization": f"Bearer {BENCH_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(config: Config, data_dir: str, port: int) -> Config:
    """The demo catalog with every action on the web channel: 20 candidates per decision."""
    data = config.model_dump(mode="json")
    for a in data["actions"]:
        if "web" not in a["channels"]:
            a["channels"].append("web")
    data["server"].update(data_dir=data_dir, port=port, namespace="nextbest-bench")
    # auth on, as in production: the bench pays for checking a key on every request
    data["auth"] = {
        "enabled": True,
        "keys": [{"name": "bench", "sha256": sha256_hex(BENCH_KEY), "scopes": list(SCOPES)}],
    }
    return config_from_dict(data, "bench")


def config40(cfg: Config) -> Config:
    """The demo schema padded with numeric attributes to 40 profile features."""
    data = cfg.model_dump(mode="json")
    data["profile"]["attributes"] += [
        {"name": f"extra_{i}", "type": "numeric"}
        for i in range(40 - len(ProfileSchema(cfg).feature_names))
    ]
    return config_from_dict(data, "bench-40")
