"""Elastic shards on real Ray: the shard count changes while events flow, slots move by
hand and back, a data dir restarts with another shard count, and a node added for new
shards dies. Nothing acknowledged is lost or applied twice, clients see only 200 or
503, and every customer reads back as they were.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from decisioning.profile.slots import SLOTS, slot_of
from decisioning.stores.slotmap import SlotMapError
from serving import server as nb_server
from tests.integration.chaos import profile_counts, under_load
from tests.integration.harness import (
    FIGURES,
    SHARD_NODE,
    Server,
    Session,
    nextbest,
    running_server,
    server_config,
    wait_until,
)

CUSTOMERS = [f"el-{i}" for i in range(60)]


def _shards(server: Server) -> dict[str, Any]:
    with server.client() as c:
        r = c.get("/v1/shards")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _move_done(server: Server) -> dict[str, Any]:
    """Wait for the running move to end; it must have succeeded."""

    def ended() -> dict[str, Any] | None:
        moving = _shards(server)["moving"]
        return None if moving["state"] == "running" else moving

    moving = wait_until(ended, 180, "the slot move to end")
    assert moving["state"] == "done", moving
    return dict(moving)


def _post(server: Server, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    with server.client() as c:
        r = c.post(path, json=body or {})
    assert r.status_code == 202, r.text
    return dict(r.json())


def _scale(server: Server, n: int) -> dict[str, Any]:
    _post(server, "/v1/shards/scale", {"shards": n})
    return _move_done(server)


def _owners_are(server: Server, n: int) -> dict[str, Any]:
    """Every slot owned by one of shards 0..n-1, each owning about SLOTS/n."""
    answer = _shards(server)
    shards = answer["shards"]
    assert [s["shard"] for s in shards] == list(range(n))
    assert sum(s["slots"] for s in shards) == SLOTS
    assert all(abs(s["slots"] - SLOTS / n) <= 1 for s in shards), shards
    covered = sorted((lo, hi) for s in shards for lo, hi in s["ranges"])
    assert covered[0][0] == 0 and covered[-1][1] == SLOTS - 1  # [first, last]
    assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:], strict=False)), covered
    return answer


def _profiles(server: Server, customers: list[str]) -> dict[str, Any]:
    """Each customer's profile as the API answers it (its shard number left out)."""
    out = {}
    with server.client() as c:
        for cid in customers:
            r = wait_until(
                lambda cid=cid: (a := c.get(f"/v1/profiles/{cid}")).status_code != 503 and a,
                60,
                f"{cid}'s shard",
            )
            assert r.status_code == 200, r.text
            body = r.json()
            body.pop("shard", None)
            out[cid] = body
    return out


def _where(server: Server) -> str:
    """Each customer's page views and owner, and each shard's recovery (diagnostics)."""
    owners = {}
    for s in _shards(server)["shards"]:
        for lo, last in s["ranges"]:
            owners.update({(lo, last): s["shard"]})
    counts = profile_counts(server, CUSTOMERS)
    per = {
        c: (counts[c], next(o for (lo, last), o in owners.items() if lo <= slot_of(c) <= last))
        for c in CUSTOMERS
    }
    with server.client() as c:
        status = c.get("/v1/status").json()["shards"]
    shards = [{k: s.get(k) for k in ("shard", "customers", "slots", "slot_epoch", "recovery")}
              for s in status]  # fmt: skip
    return f"views and owner per customer {per}; shards {shards}"


def _feed(server: Server, customers: list[str], prefix: str) -> None:
    """Events (with ids), a decision and an outcome for each customer."""
    with server.client() as c:
        for i, cid in enumerate(customers):
            events = [
                {"customer_id": cid, "type": "page_view", "event_id": f"{prefix}-{i}-{k}"}
                for k in range(1 + i % 3)
            ]
            assert c.post("/v1/events", json=events).status_code == 200
            d = c.post("/v1/decide", json={"customer_id": cid, "channel": "web"})
            assert d.status_code == 200, d.text
            actions = d.json()["actions"]
            if actions:
                o = {"decision_id": d.json()["decision_id"], "action_id": actions[0]["action_id"],
                     "outcome": "impression"}  # fmt: skip
                assert c.post("/v1/outcomes", json=o).status_code == 200


@pytest.fixture
def one_shard(session: Session, tmp_path: Path) -> Any:
    with running_server(session, tmp_path / "data", "elastic", NEXTBEST_SHARDS="1") as s:
        yield s


def test_scale_1_to_3_to_2_while_retrying_clients_send_events(one_shard: Server) -> None:
    """4 retrying clients send events with ids while the deployment scales 1 -> 3 -> 2:
    every acknowledged event is counted exactly once, no 5xx but 503."""
    epochs = [_shards(one_shard)["epoch"]]
    moved: list[dict[str, Any]] = []

    def change(k: int) -> None:
        if k < 2:
            moved.append(_scale(one_shard, (3, 2)[k]))
            epochs.append(_shards(one_shard)["epoch"])

    figures = under_load(
        one_shard, CUSTOMERS, change, seconds=24, every=6, rate=200, threads=4, changes=2
    )
    FIGURES.append(figures.line("scale 1 -> 3 -> 2 shards under load"))
    FIGURES.extend(
        f"  {m['operation']} to {m['target']}: {m['slots_moved']} slots, "
        f"{m['profiles_moved']} profiles in {m['elapsed_s']:.2f}s"
        for m in moved
    )
    assert len(moved) == 2, figures
    assert figures.acked > 200, figures
    assert figures.lost == 0, figures
    assert figures.doubled == 0, figures
    assert figures.other_5xx == 0, figures
    assert set(figures.statuses) <= {0, 200, 503}, figures
    assert epochs == sorted(set(epochs)), epochs  # every change a newer epoch
    _owners_are(one_shard, 2)
    assert all(m["profiles_moved"] > 0 for m in moved), moved


def test_moved_by_hand_and_rebalanced_every_customer_reads_back_the_same(
    one_shard: Server,
) -> None:
    customers = [f"hand-{i}" for i in range(80)]
    _feed(one_shard, customers, "hand")
    before = _profiles(one_shard, customers)
    _scale(one_shard, 2)
    lo, hi = 0, 2047  # some of shard 0's slots go to shard 1 by hand: unbalanced
    moved_here = [c for c in customers if lo <= slot_of(c) <= hi]
    assert moved_here, "no test customer in the moved range"
    r = nextbest("shards", "move", "--slots", f"{lo}-{hi}", "--to", "1", "--url", one_shard.url)
    assert r.returncode == 0, r.stderr
    assert "done in" in r.stdout, r.stdout
    owners = {s["shard"]: s for s in _shards(one_shard)["shards"]}
    assert owners[1]["slots"] == SLOTS // 2 + hi - lo + 1
    assert _profiles(one_shard, customers) == before
    r = nextbest("shards", "rebalance", "--url", one_shard.url)
    assert r.returncode == 0, r.stderr
    _owners_are(one_shard, 2)
    assert _profiles(one_shard, customers) == before
    listing = nextbest("shards", "--url", one_shard.url)
    assert listing.returncode == 0, listing.stderr
    assert "slot map epoch" in listing.stdout


def test_a_move_while_one_runs_is_refused_and_bad_input_is_422(one_shard: Server) -> None:
    with one_shard.client() as c:
        bad = c.post("/v1/shards/move", json={"first": 10, "last": 5, "to": 0})
        assert bad.status_code == 422, bad.text
        unknown = c.post("/v1/shards/move", json={"first": 0, "last": 5, "to": 7})
        assert unknown.status_code in (409, 422), unknown.text
        assert unknown.json()["error"]["code"] == "unknown_shard"
        for body in ({"shards": 0}, {"shards": 65}, {"shards": "two"}, {}, {"shards": 2, "x": 1}):
            r = c.post("/v1/shards/scale", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["code"] in ("invalid_field", "missing_field", "unknown_field")
        assert _shards(one_shard)["moving"] is None  # nothing was started
        first = c.post("/v1/shards/scale", json={"shards": 2})
        assert first.status_code == 202, first.text
        second = c.post("/v1/shards/scale", json={"shards": 3})
        if second.status_code != 409:  # the first was done already: then it ran
            assert second.status_code == 202
        else:
            assert second.json()["error"]["code"] == "move_in_progress"
    _move_done(one_shard)


def test_restart_on_the_same_data_dir_with_1_then_2_then_3_shards(
    session: Session, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    customers = [f"rs-{i}" for i in range(60)]
    with running_server(session, data, "restart-n", NEXTBEST_SHARDS="1") as s:
        _feed(s, customers, "rs")
        before = _profiles(s, customers)
    for n in (2, 3):
        with running_server(session, data, "restart-n", NEXTBEST_SHARDS=str(n)) as s:
            _owners_are(s, n)
            assert _profiles(s, customers) == before, f"with {n} shards"
            counts = [x["profiles"] for x in _shards(s)["shards"]]
            assert all(c > 0 for c in counts), counts


def test_a_node_added_for_new_shards_dies_and_nothing_acknowledged_is_lost(
    one_shard: Server, session: Session
) -> None:
    ns = one_shard.config.server.namespace
    added: list[Any] = []

    def node_of(i: int) -> str:
        return str(ray.get(ray.get_actor(f"shard-{i}", namespace=ns).node_id.remote()))

    def change(k: int) -> None:
        if k == 0:  # a new node, and shards for it
            added.append(one_shard.cluster.add_node(**SHARD_NODE))
            session.shard_nodes.append(added[0])
            _scale(one_shard, 3)
        elif k == 1:  # that node dies with its shards
            node = added[0]
            on_it = [i for i in range(3) if node_of(i) == node.node_id]
            assert on_it, "no new shard was placed on the new node"
            pids = [
                int(ray.get(ray.get_actor(f"shard-{i}", namespace=ns).pid.remote())) for i in on_it
            ]
            one_shard.cluster.remove_node(node, allow_graceful=False)
            session.shard_nodes.remove(node)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    figures = under_load(
        one_shard, CUSTOMERS, change, seconds=24, every=7, rate=150, threads=4, changes=2
    )
    FIGURES.append(figures.line("a node added for new shards, then lost"))
    where = _where(one_shard) if figures.lost else ""  # what to look at when it fails
    assert figures.lost == 0, f"{figures}; {where}"
    assert figures.doubled == 0, figures
    assert figures.other_5xx == 0, figures
    _owners_are(one_shard, 3)
    with httpx.Client(base_url=one_shard.url, headers=one_shard.headers, timeout=10) as c:
        assert c.get("/v1/status").status_code == 200


def test_a_slot_map_it_cannot_read_is_refused_at_start_with_what_to_do(
    session: Session, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "slots").mkdir(parents=True)
    (data / "slots" / "map.json").write_text('{"epoch": 3, "shards": 2, "owners": [[0, 9')
    config = server_config(
        (session.port, session.proxy_port), data, "nextbest-bad-map", "http://127.0.0.1:9"
    )
    with pytest.raises(SlotMapError) as refused:
        nb_server.start(config)
    message = str(refused.value)
    assert str(data / "slots" / "map.json") in message, message
    assert "backup" in message and "move the data dir away" in message, message
    with pytest.raises(ValueError):  # nothing was started
        ray.get_actor("supervisor", namespace="nextbest-bad-map")
    assert (data / "slots" / "map.json").read_text().endswith("[[0, 9")  # left as it was
