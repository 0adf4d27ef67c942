"""Only who belongs gets in: every route but health, readiness and the API docs needs
an API key with the route's scope. The routes come from the app itself, so a new route
cannot be forgotten here."""

from __future__ import annotations

import httpx

from tests.integration.harness import ALL_SCOPES_KEY, NO_SCOPES_KEY, Server

# and FastAPI's own /openapi.json and /docs (not in it); an open link's token is its key
OPEN = {"/healthz", "/readyz", "/v1/open/{token}"}


def _protected(server: Server) -> list[tuple[str, str]]:
    """Every operation the running app serves (its own /openapi.json), but the open ones."""
    spec = httpx.get(f"{server.url}/openapi.json").json()
    return [
        (method.upper(), path.replace("{customer_id}", "someone"))
        for path, ops in spec["paths"].items()
        if path not in OPEN
        for method in ops
    ]


def test_no_key_wrong_key_and_no_scope_are_refused_on_every_route(server: Server) -> None:
    routes = _protected(server)
    assert {"/v1/events", "/v1/decide", "/v1/outcomes", "/v1/status"} <= {p for _, p in routes}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path in routes:
            for headers, status, code in (
                ({}, 401, "unauthenticated"),
                ({"authorization": "Bearer nb_not-a-key"}, 401, "unauthenticated"),
                ({"x-api-key": ALL_SCOPES_KEY + "x"}, 401, "unauthenticated"),
                ({"authorization": f"Bearer {NO_SCOPES_KEY}"}, 403, "forbidden"),
            ):
                r = c.request(method, path, headers=headers, json={})
                assert r.status_code == status, (method, path, headers, r.text)
                assert r.json()["error"]["code"] == code
                if status == 401:
                    assert r.headers["www-authenticate"] == "Bearer"
                assert ALL_SCOPES_KEY not in r.text and NO_SCOPES_KEY not in r.text


def test_a_key_with_the_scope_gets_in_either_header(server: Server) -> None:
    body = {"customer_id": "auth-1", "channel": "web"}
    for headers in (
        {"authorization": f"Bearer {ALL_SCOPES_KEY}"},
        {"authorization": f"bearer {ALL_SCOPES_KEY}"},
        {"x-api-key": ALL_SCOPES_KEY},
    ):
        r = httpx.post(f"{server.url}/v1/decide", json=body, headers=headers)
        assert r.status_code == 200, r.text


def test_health_and_docs_stay_open(server: Server) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path
