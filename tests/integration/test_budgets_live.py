"""A volume budget on the running server: two shards under concurrent load never show
a budgeted action more often than its budget, and no decision waits for a grant."""

from __future__ import annotations

import copy
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.integration.harness import Server, wait_until

BUDGET = 30


def test_a_budget_holds_across_shards_under_load(server: Server, client: httpx.Client) -> None:
    before = client.get("/v1/catalog").json()
    catalog = {"actions": copy.deepcopy(before["actions"]), "decisioning": before["decisioning"]}
    hot = next(a for a in catalog["actions"] if a["id"] == "student_card")
    hot.update(lever=1e6, eligibility=None, budget={"per_day": BUDGET})
    assert client.put("/v1/catalog", json=catalog).status_code == 200
    try:

        def warm() -> bool:  # the shards' first grants arrive in the background
            d = client.post(
                "/v1/decide", json={"customer_id": "warm", "channel": "web", "dry_run": True}
            ).json()
            return bool(d["actions"]) and d["actions"][0]["action_id"] == "student_card"

        wait_until(warm, 30, "the first budget grant")

        def load(k: int) -> Counter[str]:
            shown: Counter[str] = Counter()
            with server.client() as c:
                for i in range(60):
                    r = c.post("/v1/decide", json={"customer_id": f"bud-{k}-{i}", "channel": "web"})
                    assert r.status_code == 200, r.text
                    shown[r.json()["actions"][0]["action_id"] if r.json()["actions"] else ""] += 1
            return shown

        with ThreadPoolExecutor(4) as pool:  # .result() raises what a thread raised
            shown = sum((f.result() for f in [pool.submit(load, k) for k in range(4)]), Counter())
        assert sum(shown.values()) == 240  # every decision answered
        assert 0 < shown["student_card"] <= BUDGET, shown
        assert shown[""] == 0  # the rest went to other offers
        ledger = json.loads((server.data_dir / "budgets" / "ledger.json").read_text())
        granted = sum(v.get("student_card", 0) for v in ledger["granted"].values())
        assert shown["student_card"] <= granted <= BUDGET
    finally:
        assert client.post("/v1/catalog/rollback").status_code == 200
