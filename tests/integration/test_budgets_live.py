"""A volume budget on the running server: two shards under concurrent load never show
a budgeted action more often than its budget, and no decision waits for a grant."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import Counter

import httpx

from tests.integration.conftest import Server

BUDGET = 30


def test_a_budget_holds_across_shards_under_load(server: Server, client: httpx.Client) -> None:
    before = client.get("/v1/catalog").json()
    catalog = {"actions": copy.deepcopy(before["actions"]), "decisioning": before["decisioning"]}
    hot = next(a for a in catalog["actions"] if a["id"] == "student_card")
    hot.update(lever=1e6, eligibility=None, budget={"per_day": BUDGET})
    assert client.put("/v1/catalog", json=catalog).status_code == 200
    try:
        deadline = time.monotonic() + 30  # the shards' first grants arrive in the background
        while time.monotonic() < deadline:
            d = client.post(
                "/v1/decide", json={"customer_id": "warm", "channel": "web", "dry_run": True}
            ).json()
            if d["actions"] and d["actions"][0]["action_id"] == "student_card":
                break
            time.sleep(0.1)
        shown: Counter[str] = Counter()
        statuses: Counter[int] = Counter()

        def load(k: int) -> None:
            with server.client() as c:
                for i in range(60):
                    r = c.post("/v1/decide", json={"customer_id": f"bud-{k}-{i}", "channel": "web"})
                    statuses[r.status_code] += 1
                    if r.status_code == 200 and r.json()["actions"]:
                        shown[r.json()["actions"][0]["action_id"]] += 1

        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert set(statuses) == {200}, statuses
        assert 0 < shown["student_card"] <= BUDGET, shown
        assert sum(shown.values()) == 240  # the rest went to other offers
        ledger = json.loads((server.data_dir / "budgets" / "ledger.json").read_text())
        granted = sum(v.get("student_card", 0) for v in ledger["granted"].values())
        assert shown["student_card"] <= granted <= BUDGET
    finally:
        assert client.post("/v1/catalog/rollback").status_code == 200
