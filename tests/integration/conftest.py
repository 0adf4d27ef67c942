"""One local Ray cluster and one nextbest server for the whole integration session.

The cluster is `ray.cluster_utils.Cluster`: a head node (2 CPUs: Serve, the ingress) and
two shard nodes (no CPUs; the `nextbest_shard` resource the shards ask for), all on this
machine and sharing the data dir, so failure tests can take a node away."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from ray.cluster_utils import Cluster

from decisioning.config import SCOPES, Config
from decisioning.loader import load_config
from decisioning.registry import Registry
from serving import server as nb_server
from serving.auth import sha256_hex
from tests.conftest import EXAMPLE
from tests.receiver import Receiver
from training.demo import generate
from training.train import TrainResult, train

# fixed, not new_key(): test modules import this file again under another name
ALL_SCOPES_KEY = "nb_tests-every-scope-0123456789abcdefghijklmnopqrstu"
NO_SCOPES_KEY = "nb_tests-no-scope-0123456789abcdefghijklmnopqrstuvwx"
SHARD_NODE = {"num_cpus": 0, "resources": {"nextbest_shard": 100}, "object_store_memory": 80 << 20}


@dataclass
class Server:
    url: str
    config: Config
    data_dir: Path
    model: TrainResult
    cluster: Cluster
    shard_nodes: list[Any]
    receiver: Receiver  # the sms sink's webhook (call_center: Parquet in data_dir/outbound)

    @property
    def headers(self) -> dict[str, str]:
        """Every scope (ALL_SCOPES_KEY)."""
        return {"authorization": f"Bearer {ALL_SCOPES_KEY}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers=self.headers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("nextbest-data")
    receiver = Receiver()
    sinks = {
        "sms": {"webhook": {"url": receiver.url, "timeout_s": 5}},
        "call_center": {"parquet": {"path": str(data_dir / "outbound")}},
    }
    config = load_config(
        EXAMPLE,
        {
            "NEXTBEST_DATA_DIR": str(data_dir),
            "NEXTBEST_PORT": str(_free_port()),
            "NEXTBEST_PROXY_PORT": str(_free_port()),
            "NEXTBEST_SHARDS": "2",
            "NEXTBEST_NAMESPACE": "nextbest-test",
            "NEXTBEST_MAX_ONGOING_REQUESTS": "32",  # test_backpressure overloads it
            "NEXTBEST_SHARD_RESOURCES": '{"nextbest_shard": 0.001}',
            "NEXTBEST_MAX_STRING_LENGTH": "200",  # not the default: test_http checks it
            # test_erasure scans the bytes of every file: ids must not hide in compression
            "NEXTBEST_LOGS_COMPRESSION": "none",
            "NEXTBEST_DELIVERY_SINKS": json.dumps(sinks),
            "NEXTBEST_DELIVERY_LINK_KEY_ENV": "NB_TEST_LINK_KEY",  # open links on
            "NEXTBEST_AUTH_KEYS": json.dumps(
                [
                    {"name": "tests", "sha256": sha256_hex(ALL_SCOPES_KEY), "scopes": SCOPES},
                    {"name": "no_scopes", "sha256": sha256_hex(NO_SCOPES_KEY), "scopes": []},
                ]
            ),
        },
    )
    data = generate(config, customers=300, offers=5)
    model = train(data.training, config, rounds=40, progress=lambda m: None)
    Registry(config.server.data_dir).set_deployed("propensity", model.manifest.version)
    os.environ.setdefault("NB_TEST_LINK_KEY", "integration-session-link-secret")
    for key, value in nb_server.serve_env(config).items():
        os.environ.setdefault(key, value)  # inherited by every node's processes
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "object_store_memory": 200 << 20,
            "include_dashboard": False,
            # a node that stops answering is declared dead after ~3 s, not ~30 s
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    try:
        shard_nodes = [cluster.add_node(**SHARD_NODE) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        url = nb_server.start(config)
        yield Server(url, config, data_dir, model, cluster, shard_nodes, receiver)
        nb_server.stop(config)
    finally:
        ray.shutdown()
        cluster.shutdown()
        receiver.close()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
