"""Starting and stopping as ops do it: a start right after a stop, a port another
process holds, a shard that starts with a deployed model it must refuse."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from actors.messages import Decide
from actors.remote import ShardActor
from serving import server as nb_server
from serving.bodies import decision_body
from tests.conftest import EXAMPLE
from tests.integration.harness import CLI, Session, running_server, server_config


def _hold(port: int) -> socket.socket:
    """A listening socket on `port`, as another program would hold it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.fixture(autouse=True)
def _no_serve() -> None:
    """Each test starts as on a fresh machine: no Serve running yet."""
    serve.shutdown()


def test_a_start_right_after_a_stop_then_one_that_waits_for_a_port(
    session: Session, tmp_path: Path
) -> None:
    with running_server(session, tmp_path / "a", "restart-a", keep_serve=False) as a:
        assert httpx.get(f"{a.url}/healthz", timeout=5).status_code == 200
    # stop returned: every actor it started is gone and its ports are free again
    names = ray.util.list_named_actors(all_namespaces=True)
    assert not [n for n in names if n["namespace"] in ("serve", a.config.server.namespace)]
    assert nb_server._taken(a.config) == []
    # another program holds the port a moment longer: the next start waits for it
    sock = _hold(session.port)
    timer = threading.Timer(2.0, sock.close)
    timer.start()
    try:
        with running_server(session, tmp_path / "b", "restart-b", keep_serve=False) as b:
            assert httpx.get(f"{b.url}/healthz", timeout=5).status_code == 200
    finally:
        timer.cancel()
        sock.close()


def test_a_port_held_by_another_process_is_named_without_a_traceback(
    session: Session, tmp_path: Path
) -> None:
    sock = _hold(session.port)
    try:
        env = {
            **os.environ,
            "RAY_ADDRESS": session.cluster.address,
            "NEXTBEST_PORT": str(session.port),
            "NEXTBEST_PROXY_PORT": str(session.proxy_port),
            "NEXTBEST_DATA_DIR": str(tmp_path / "data"),
            "NEXTBEST_NAMESPACE": "nextbest-taken",
            "NEXTBEST_AUTH_ENABLED": "false",
        }
        run = subprocess.run(
            [CLI, "serve", "--config", str(EXAMPLE)],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
    finally:
        sock.close()
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"port {session.port}" in run.stderr and f"pid {os.getpid()}" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_a_shard_starts_without_a_deployed_model_it_refuses(
    session: Session, tmp_path: Path
) -> None:
    """Signing switched on after an unsigned model was deployed, with the key missing
    from the environment: every model is refused, and the shard starts anyway (logged,
    shown in its status), instead of failing its start in a loop."""
    data_dir = tmp_path / "data"
    ports = (session.port, session.proxy_port)
    shutil.copytree(session.template, data_dir)
    config = server_config(
        ports,
        data_dir,
        "nextbest-unsigned",
        "http://127.0.0.1:9/",
        NEXTBEST_AUTH_MODEL_KEY_ENV="NB_TEST_MODEL_KEY_NOT_SET",
    )
    actor = (
        ray.remote(ShardActor)
        .options(
            namespace="nextbest-unsigned",
            max_restarts=-1,
            num_cpus=0,
            resources={"nextbest_shard": 0.001},
        )
        .remote(0, config)
    )
    try:
        assert ray.get(actor.ready.remote(), timeout=120)
        status = ray.get(actor.status.remote(), timeout=30)
        assert status["models"] == {}
        [(ref, why)] = status["refused_models"].items()
        assert ref == session.model.manifest.ref and "not set" in why
        assert status["recovery"]["restarts"] == 0  # it started once, not in a loop
        d = decision_body(ray.get(actor.call.remote("decide", Decide("u-1", "web"))))
        assert d["model_version"] is None and d["decision_id"]
    finally:
        ray.kill(actor, no_restart=True)
