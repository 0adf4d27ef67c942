"""The benchmark's load through the client (nextbest_client/loadtest.py) and its CLI:
calls counted, errors by code, requests per endpoint; and requests grouped by owner
for a load generator of its own."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nextbest_client import SlotMap
from nextbest_client.__main__ import main
from nextbest_client.loadtest import by_owner, run
from tests.unit.nextbest_client.scripted import error, ok, scripted
from tests.unit.nextbest_client.test_client_routing import customers, halves


def test_load_counts_calls_per_endpoint_and_errors_by_code() -> None:
    with scripted(3) as [ingress, a, b]:
        ingress.default("/v1/cluster/slots", ok(halves(1, a.url, b.url)))
        r = run(ingress.url, "k", what="events", seconds=0.3, concurrency=2, customers=50)
        assert r.calls > 0 and r.errors == 0 and r.p50_ms > 0
        assert set(r.requests) == {a.url, b.url}  # every batch to its owner
        b.default("/v1/decide", error(422, "unknown_channel", "channel"))
        r = run(ingress.url, "k", what="decide", seconds=0.3, concurrency=2, customers=50,
                routing=False)  # fmt: skip
        assert r.errors == 0 and set(r.requests) == {ingress.url} and not r.routing
        r = run(ingress.url, "k", what="decide", seconds=0.3, concurrency=2, customers=50)
        assert r.errors > 0 and set(r.errors_by_code) == {"unknown_channel"}


def test_the_cli_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    with scripted() as [srv]:
        code = main(["--url", srv.url, "--key", "k", "load", "--seconds", "0.2", "--json",
                     "--no-routing", "--concurrency", "2"])  # fmt: skip
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == 0 and out["what"] == "decide" and out["calls"] > 0 and out["rate"] > 0


def test_by_owner_groups_requests_by_their_customers_endpoint() -> None:
    m = SlotMap.from_wire(halves(1, "http://a", None))
    on_a, on_b = customers(0, 3), customers(1, 2)
    bodies = [{"customer_id": c} for c in on_b[:1] + on_a + on_b[1:]]
    groups = by_owner(m, bodies, lambda body: body["customer_id"])
    assert groups == {None: [{"customer_id": c} for c in on_b],
                      "http://a": [{"customer_id": c} for c in on_a]}  # fmt: skip
