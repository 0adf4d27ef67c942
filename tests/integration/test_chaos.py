"""Shards SIGKILLed again and again under steady load with retrying clients, in every
fsync mode, and a whole node lost: no acknowledged event is lost or applied twice, and
clients see only 503 (or a dropped connection) while a shard recovers.

`make test` runs short variants; `make chaos` runs the long ones (SIGKILL every 15 s
for 90 s at ~500 events/s). The figures are printed at the end of the run ("fault
figures") and go into the README's reliability section.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from tests.integration.chaos import customers_per_shard, under_load
from tests.integration.harness import FIGURES, SHARD_NODE, Server, Session, running_server


@pytest.fixture
def fresh(session: Session, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server of this test's own, with the test's `fsync` parameter (if any)."""
    mode = getattr(request, "param", "batch")
    with running_server(session, tmp_path / "data", f"chaos-{mode}", NEXTBEST_FSYNC=mode) as s:
        yield s


def _pid(server: Server, i: int) -> int:
    shard = ray.get_actor(f"shard-{i}", namespace=server.config.server.namespace)
    return int(ray.get(shard.pid.remote(), timeout=60))


@pytest.mark.parametrize("fresh", ["always", "batch", "none"], indirect=True)
def test_sigkill_shards_under_steady_load_in_every_fsync_mode(fresh: Server) -> None:
    customers = [c for cs in customers_per_shard(fresh, 10, "sk").values() for c in cs]

    def kill(k: int) -> None:
        os.kill(_pid(fresh, k % fresh.config.server.shards), signal.SIGKILL)

    figures = under_load(fresh, customers, kill)
    FIGURES.append(figures.line(f"shard SIGKILLed, fsync {fresh.config.server.fsync}"))
    assert figures.kills >= 2, figures
    assert figures.acked > 100, figures
    assert figures.lost == 0, figures
    assert figures.doubled == 0, figures
    assert figures.other_5xx == 0, figures
    assert figures.statuses[503] + figures.statuses[0] > 0, figures  # the kills were seen
    assert set(figures.statuses) <= {0, 200, 503}, figures


def test_node_loss_under_load(fresh: Server, session: Session) -> None:
    """A shard node dies (its raylet and every worker on it SIGKILLed) while events
    flow; Ray restarts its shards on the other shard node, where they recover from the
    shared state dir. A new node takes the lost one's place afterwards."""
    ns = fresh.config.server.namespace

    def node_of(i: int) -> str:
        return str(ray.get(ray.get_actor(f"shard-{i}", namespace=ns).node_id.remote()))

    nodes = {n.node_id: n for n in session.shard_nodes}
    lost: list[str] = []

    def kill(_: int) -> None:
        if lost:  # one node goes; the later ticks of the load only watch
            return
        node = node_of(0)
        assert node in nodes, "shard-0 is not on a shard node"
        on_it = [i for i in range(fresh.config.server.shards) if node_of(i) == node]
        pids = [_pid(fresh, i) for i in on_it]
        fresh.cluster.remove_node(nodes[node], allow_graceful=False)
        for pid in pids:  # the machine is gone: its workers too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        session.shard_nodes.remove(nodes[node])
        lost.append(node)

    customers = [c for cs in customers_per_shard(fresh, 10, "nl").values() for c in cs]
    try:
        figures = under_load(fresh, customers, kill, seconds=20, every=5)
    finally:
        while len(session.shard_nodes) < 2:  # the next tests get two shard nodes again
            session.shard_nodes.append(session.cluster.add_node(**SHARD_NODE))
        session.cluster.wait_for_nodes()
    figures.kills = len(lost)  # (the later ticks only watched)
    FIGURES.append(figures.line("shard node lost"))
    assert len(lost) == 1
    assert figures.lost == 0 and figures.doubled == 0 and figures.other_5xx == 0, figures
    assert node_of(0) != lost[0]  # it moved
    with fresh.client() as c:
        status = c.get("/v1/status")
        if status.status_code == 200:  # (503 while a supervisor that was there restarts)
            recovery = status.json()["shards"][0]["recovery"]
            assert recovery["generation"] >= 2 and recovery["restarts"] >= 1  # ops see it
