"""The admin routes where they are not served: on a server with the admin API off
(`auth.admin_api: false`), the ingress that mounts them (serving/admin.py's router, with
its replica's access) answers 404 for every one, whatever the key, and its API document
leaves them out; the channels' routes serve as ever. (The same holds with the admin API
moved to `server.admin_port`: one flag, `on_channel_port(config)`, decides both.)"""

from __future__ import annotations

import httpx

from serving.admin import ADMIN_PATHS
from tests.integration.harness import ALL_SCOPES_KEY, Server

SERVER_ENV = {"NEXTBEST_AUTH_ADMIN_API": "false"}
KEY = {"authorization": f"Bearer {ALL_SCOPES_KEY}"}


def test_admin_routes_are_404_and_undocumented_where_off(
    server: Server, client: httpx.Client
) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert not ADMIN_PATHS & set(spec["paths"])
    assert "/v1/decide" in spec["paths"]
    for path in sorted(ADMIN_PATHS):
        concrete = path.replace("{name}", "propensity")
        answered = 0
        for method in ("GET", "POST", "PUT"):
            for headers in ({}, KEY):
                r = httpx.request(method, f"{server.url}{concrete}", headers=headers, json={})
                if r.status_code == 405:  # a method the route does not have
                    continue
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == "not_found"
                answered += 1
        assert answered, path  # every admin path has a method, and it answered 404
    d = client.post("/v1/decide", json={"customer_id": "off-1", "channel": "web"})
    assert d.status_code == 200, d.text
