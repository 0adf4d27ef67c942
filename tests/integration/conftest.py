"""One local Ray and one nextbest server for the whole integration session."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import ray

from decisioning.config import Config
from decisioning.loader import load_config
from decisioning.registry import Registry
from serving import server as nb_server
from tests.conftest import EXAMPLE
from training.demo import generate
from training.train import TrainResult, train


@dataclass
class Server:
    url: str
    config: Config
    data_dir: Path
    model: TrainResult

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("nextbest-data")
    config = load_config(
        EXAMPLE,
        {
            "NEXTBEST_DATA_DIR": str(data_dir),
            "NEXTBEST_PORT": str(_free_port()),
            "NEXTBEST_PROXY_PORT": str(_free_port()),
            "NEXTBEST_SHARDS": "2",
            "NEXTBEST_NAMESPACE": "nextbest-test",
            "NEXTBEST_MAX_ONGOING_REQUESTS": "32",  # test_backpressure overloads it
        },
    )
    data = generate(config, customers=300, offers=5)
    model = train(data.training, config, rounds=40, progress=lambda m: None)
    Registry(config.server.data_dir).set_deployed("propensity", model.manifest.version)
    nb_server.start_ray(config, num_cpus=2, object_store_mb=200)
    try:
        url = nb_server.start(config)
        yield Server(url, config, data_dir, model)
        nb_server.stop(config)
    finally:
        ray.shutdown()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
