"""The floor: a no-op Serve deployment, what Serve itself costs for a small POST.

(No `from __future__ import annotations`: FastAPI must resolve `Request` at import.)
"""

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

noop_app = FastAPI()


@serve.deployment(name="noop", logging_config={"enable_access_log": False})
@serve.ingress(noop_app)
class Noop:
    """Reads the body and answers a fixed small JSON."""

    @noop_app.post("/")
    async def post(self, request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', media_type="application/json")
