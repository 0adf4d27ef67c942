"""Fixtures: Ray once per session, a nextbest server per module (see harness.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray
from ray.cluster_utils import Cluster

from decisioning.policy.scoring import compile_native, native_tag
from decisioning.stores.registry import Registry
from serving import server as nb_server
from tests.integration.chaos import CHAOS
from tests.integration.harness import (
    FIGURES,
    LINK_KEY_ENV,
    SHARD_NODE,
    Server,
    Session,
    _free_port,
    running_server,
    server_config,
)
from training.demo import generate
from training.train import train


@pytest.fixture(scope="session")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """Ray, started once: a head node and two shard nodes; the demo model trained once."""
    template = tmp_path_factory.mktemp("template-data")
    port, proxy_port = _free_port(), _free_port()
    config = server_config((port, proxy_port), template, "template", "http://127.0.0.1:9/")
    data = generate(config, customers=300, offers=5)
    model = train(data.training, config, rounds=40, progress=lambda m: None)
    registry = Registry(config.server.data_dir)
    registry.set_deployed("propensity", model.manifest.version)
    if (tag := native_tag()) is not None:  # compiled once, not by every module's supervisor
        model_text = Path(model.path, "model.txt").read_text()
        registry.write_native(model.manifest.sha256, tag, compile_native(model_text))
    os.environ.setdefault(LINK_KEY_ENV, "integration-session-link-secret")
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
        yield Session(cluster, shard_nodes, port, proxy_port, template, model)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(autouse=True)
def _ray(session: Session) -> None:
    """Every integration test runs on the session's Ray, even one that asks for no
    server: a `ray.remote` call before the session started would start a Ray of its
    own (and the session's `ray.init` would then fail), whatever order tests run in."""


@pytest.fixture(scope="module")
def server(
    session: Session, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """This module's own server, with the module's SERVER_ENV overrides."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    env = dict(getattr(request.module, "SERVER_ENV", {}))
    with running_server(session, tmp_path_factory.mktemp(f"data-{name}"), name, **env) as s:
        yield s


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `chaos` are the long fault variants: `make chaos` runs them."""
    if CHAOS:
        return
    skip = pytest.mark.skip(reason="a long fault variant: `make chaos` runs it")
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault tests' figures (for the README's reliability section)."""
    if FIGURES:
        terminalreporter.section("fault figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
