"""What the integration tests share: the server they run, load threads, waiting.

(Fixtures are in conftest.py; this module is imported by one name only, so its state,
such as the fault figures, is one.)

One local Ray cluster per session; one nextbest server per test module.

The cluster is `ray.cluster_utils.Cluster`: a head node (2 CPUs: Serve, the ingress) and
two shard nodes (no CPUs; the `nextbest_shard` resource the shards ask for), all on this
machine, so failure tests can take a node away. Ray starts once per session.

Each module gets a server of its own: its own namespace, a data dir copied from a
template (the demo model trained and compiled once per session), its own webhook
receiver, and the config overrides in the module's `SERVER_ENV` dict (NEXTBEST_* keys).
The server is stopped when the module ends, so no module sees another's state and the
modules pass in any order (`make test` runs them shuffled).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ray.cluster_utils import Cluster

from decisioning.config import SCOPES, Config
from decisioning.config.loader import load_config
from serving import server as nb_server
from serving.auth import sha256_hex
from tests.conftest import EXAMPLE
from tests.receiver import Receiver
from training.train import TrainResult

# fixed, not new_key(): test modules import this file again under another name
ALL_SCOPES_KEY = "nb_tests-every-scope-0123456789abcdefghijklmnopqrstu"
NO_SCOPES_KEY = "nb_tests-no-scope-0123456789abcdefghijklmnopqrstuvwx"
SHARD_NODE = {"num_cpus": 0, "resources": {"nextbest_shard": 100}, "object_store_memory": 80 << 20}
LINK_KEY_ENV = "NB_TEST_LINK_KEY"


@dataclass
class Session:
    """What every module shares: the Ray cluster, the ports, the trained demo model."""

    cluster: Cluster
    shard_nodes: list[Any]
    port: int
    proxy_port: int
    template: Path  # a data dir holding the deployed demo model and its native code
    model: TrainResult


@dataclass
class Server:
    url: str
    config: Config
    data_dir: Path
    model: TrainResult
    cluster: Cluster
    shard_nodes: list[Any]
    receiver: Receiver  # the sms sink's webhook (call_center: Parquet in data_dir/outbound)
    env: dict[str, str] = field(default_factory=dict)  # the overrides it was started with

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


def server_config(
    ports: tuple[int, int], data_dir: Path, namespace: str, webhook: str, **env: str
) -> Config:
    """The example config as the integration tests run it, with `env` overrides."""
    sinks = {
        "sms": {"webhook": {"url": webhook, "timeout_s": 5}},
        "call_center": {"parquet": {"path": str(data_dir / "outbound")}},
    }
    base = {
        "NEXTBEST_DATA_DIR": str(data_dir),
        "NEXTBEST_PORT": str(ports[0]),
        "NEXTBEST_PROXY_PORT": str(ports[1]),
        "NEXTBEST_SHARDS": "2",
        "NEXTBEST_DRAIN_S": "0.5",  # a stopping replica drains half a second, not two
        "NEXTBEST_NAMESPACE": namespace,
        "NEXTBEST_MAX_ONGOING_REQUESTS": "32",  # test_backpressure overloads it
        "NEXTBEST_SHARD_RESOURCES": '{"nextbest_shard": 0.001}',
        "NEXTBEST_MAX_STRING_LENGTH": "200",  # not the default: test_http checks it
        # test_erasure scans the bytes of every file: ids must not hide in compression
        "NEXTBEST_LOGS_COMPRESSION": "none",
        "NEXTBEST_DELIVERY_SINKS": json.dumps(sinks),
        "NEXTBEST_DELIVERY_LINK_KEY_ENV": LINK_KEY_ENV,  # open links on
        "NEXTBEST_AUTH_KEYS": json.dumps(
            [
                {"name": "tests", "sha256": sha256_hex(ALL_SCOPES_KEY), "scopes": SCOPES},
                {"name": "no_scopes", "sha256": sha256_hex(NO_SCOPES_KEY), "scopes": []},
            ]
        ),
    }
    return load_config(EXAMPLE, {**base, **env})


@contextlib.contextmanager
def running_server(
    session: Session,
    data_dir: Path,
    name: str,
    keep_serve: bool = True,
    before_start: Callable[[Config], None] | None = None,
    **env: str,
) -> Iterator[Server]:
    """A nextbest server of its own (namespace `nextbest-<name>`, `data_dir` seeded from
    the template) on the session's ports; stopped, every actor of it gone, at the end
    (Serve's controller and proxy stay for the next one, unless not `keep_serve`)."""
    shutil.copytree(session.template, data_dir, dirs_exist_ok=True)
    receiver = Receiver()
    ports = (session.port, session.proxy_port)
    config = server_config(ports, data_dir, f"nextbest-{name}", receiver.url, **env)
    try:
        if before_start is not None:  # e.g. a shard started by hand, which the server adopts
            before_start(config)
        url = nb_server.start(config)
        try:
            yield Server(
                url,
                config,
                data_dir,
                session.model,
                session.cluster,
                session.shard_nodes,
                receiver,
                env,
            )
        finally:
            nb_server.stop(config, keep_serve=keep_serve)
    finally:
        receiver.close()


class Load:
    """Background load threads that keep every exception and count what they did.

    `run(fn)` starts a thread calling `fn()` until `stop()`; `fn` returns how many
    operations it completed. A non-200 answer inside `fn` should raise. `stop()` joins
    the threads and fails the test on the first exception any of them raised.
    """

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run(self, fn: Callable[[], int], threads: int = 1) -> None:
        def loop() -> None:
            try:
                while not self._stop.is_set():
                    n = fn()
                    with self._lock:
                        self.done += n
            except BaseException as e:  # noqa: BLE001 - handed to the test by stop()
                with self._lock:
                    self.errors.append(e)

        for _ in range(threads):
            t = threading.Thread(target=loop, daemon=True)
            t.start()
            self._threads.append(t)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        """Until at least `n` operations are done (fails on a thread's error or timeout)."""
        wait_until(lambda: self.done >= n or bool(self.errors), timeout, f"{n} operations")
        self.check()

    def stop(self) -> int:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"
        self.check()
        return self.done

    def check(self) -> None:
        if self.errors:
            raise AssertionError(f"{len(self.errors)} load errors") from self.errors[0]


def wait_until(
    condition: Callable[[], Any], timeout: float = 60.0, what: str = "the condition"
) -> Any:
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}")
        time.sleep(0.05)


FIGURES: list[str] = []  # lines the fault tests report, printed at the end of the run


class Deciding(Load):
    """`threads` threads deciding for customers `<prefix>-<n>` until stopped; every
    answer must be a 200 (anything else fails the test at `stop()`), and the answers
    are kept in `answers`, in the order they came."""

    def __init__(
        self,
        server: Server,
        prefix: str,
        threads: int = 4,
        customers: int = 40,
        body: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.answers: list[dict[str, Any]] = []
        make = body or (lambda c: {"customer_id": c, "channel": "web"})

        self._clients: list[httpx.Client] = []

        def worker() -> Callable[[], int]:
            client = server.client()
            self._clients.append(client)
            counter = iter(range(1 << 62))

            def one() -> int:
                cid = f"{prefix}-{next(counter) % customers}"
                r = client.post("/v1/decide", json=make(cid))
                if r.status_code != 200:
                    raise AssertionError(f"decide answered {r.status_code}: {r.text}")
                with self._lock:
                    self.answers.append(r.json())
                return 1

            return one

        for _ in range(threads):
            self.run(worker())

    def stop(self) -> int:
        try:
            return super().stop()
        finally:
            for c in self._clients:
                c.close()

    def versions(self) -> list[str]:
        with self._lock:
            return [a["model_version"] for a in self.answers]

    def __enter__(self) -> Deciding:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.stop()
        else:  # the test failed already: stop the threads, keep its error
            with contextlib.suppress(AssertionError):
                self.stop()


def during(server: Server, action: Callable[[], Any], prefix: str) -> tuple[Any, list[str]]:
    """`action()` while 4 threads decide (20 answers before it, 20 after, every one a
    200): its result, and the model versions answered, in order."""
    with Deciding(server, prefix) as load:
        load.wait_for(20)
        result = action()
        load.wait_for(load.done + 20)
    versions = load.versions()
    assert len(versions) >= 40
    return result, versions


CLI = str(Path(sys.executable).parent / "nextbest")


def nextbest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args, "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NEXTBEST_API_KEY": ALL_SCOPES_KEY},  # the CLI's own key
    )
