"""Erasure: after DELETE /v1/profiles/{id} and the snapshot it starts, no file under
the data dir holds the customer's id or attributes, and no log names the customer."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pyarrow.fs as pafs
import ray

from tests.integration.harness import Server
from training.from_logs import open_dataset

CUSTOMER = "erase-me-9f2c1d"
INCOME = 987654.25  # exact in float32: its 4 bytes are what a file would hold


def _files_holding(root: Path, *needles: bytes) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            try:
                data = Path(path).read_bytes()
            except OSError:
                continue  # gone while we looked (a segment being deleted)
            if any(n in data for n in needles):
                out.append(path)
    return out


def test_erasure_leaves_no_trace_on_disk(server: Server, client: httpx.Client) -> None:
    events = [
        {"customer_id": CUSTOMER, "type": "profile_update", "properties": {"income": INCOME}},
        {"customer_id": CUSTOMER, "type": "page_view", "event_id": f"{CUSTOMER}-ev-1"},
    ]
    assert client.post("/v1/events", json=events).status_code == 200
    d = client.post("/v1/decide", json={"customer_id": CUSTOMER, "channel": "web"}).json()
    if d["actions"]:
        outcome = {"decision_id": d["decision_id"], "action_id": d["actions"][0]["action_id"]}
        assert client.post("/v1/outcomes", json={**outcome, "outcome": "click"}).is_success
    shard = client.get(f"/v1/profiles/{CUSTOMER}").json()["shard"]
    ns = server.config.server.namespace
    actor = ray.get_actor(f"shard-{shard}", namespace=ns)
    ray.get(actor.snapshot.remote())  # in a snapshot too
    ray.get(actor.flush_logs.remote())  # and in the decision and outcome log files
    needles = (CUSTOMER.encode(), struct.pack("<f", INCOME), struct.pack("<d", INCOME))
    assert _files_holding(server.data_dir, *needles)  # the scan finds it before
    assert _files_holding(server.data_dir / "logs" / "decisions", CUSTOMER.encode())
    if d["actions"]:
        assert _files_holding(server.data_dir / "logs" / "outcomes", CUSTOMER.encode())

    r = client.delete(f"/v1/profiles/{CUSTOMER}")
    assert r.status_code == 200, r.text
    assert r.json()["erased"] is True
    assert client.get(f"/v1/profiles/{CUSTOMER}").json()["known"] is False
    deadline = time.time() + 60
    while (left := _files_holding(server.data_dir, *needles)) and time.time() < deadline:
        time.sleep(0.2)
    assert left == [], left
    for kind in ("decisions", "outcomes"):  # and no row of the customer reads back
        logged = open_dataset(pafs.LocalFileSystem(), str(server.data_dir / "logs" / kind))
        if logged is not None:  # (a dir whose every file held only the customer is empty)
            rows = logged.to_table(filter=pc.field("customer_id") == CUSTOMER)
            assert rows.num_rows == 0
    again = client.delete(f"/v1/profiles/{CUSTOMER}")  # erasing twice is harmless
    assert again.status_code == 200 and again.json()["erased"] is False
    # its tombstone (the logs might still hold the id) goes with the snapshot it starts
    deadline = time.time() + 60
    while (left := _files_holding(server.data_dir, *needles)) and time.time() < deadline:
        time.sleep(0.2)
    assert left == [], left
    # and the logs of every Ray process never named the customer
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    assert _files_holding(logs, CUSTOMER.encode()) == []
