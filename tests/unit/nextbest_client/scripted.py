"""A real HTTP server for the client's unit tests: uvicorn + starlette in a thread on
127.0.0.1, answering each request from a script (per path: the next scripted answer,
then the path's default) and keeping every request it got. No mock of httpx: the
client's real pools, timeouts and codecs run against it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgpack
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Got:
    """A request the server got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def value(self) -> Any:
        if not self.body:
            return None
        if "msgpack" in self.headers.get("content-type", ""):
            return msgpack.unpackb(self.body, raw=False)
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None  # a value (encoded as the request's Accept asks) or bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow server)


Script = Answer | Callable[[Got], Answer]


def ok(body: Any = None) -> Answer:
    return Answer(200, {"accepted": 1} if body is None else body)


def plausible(got: Got) -> Answer:
    """What the API answers a valid request of `got`'s route (the default answer)."""
    if got.path.startswith("/v1/profiles/"):
        cid = got.path.removeprefix("/v1/profiles/")
        return ok({"customer_id": cid, "known": False, "attributes": {}, "aggregates": {},
                   "consent": {}, "recent_decisions": [], "shard": 0})  # fmt: skip
    if got.path == "/v1/decide":
        body = got.value
        return ok({"decision_id": "d-0000-x", "customer_id": body["customer_id"],
                   "channel": body["channel"], "actions": []})  # fmt: skip
    if got.path == "/v1/events":
        return ok({"accepted": len(got.value) if isinstance(got.value, list) else 1})
    return ok()


def unavailable(code: str = "shard_unavailable", retry_after: str | None = "0") -> Answer:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    return Answer(503, {"error": {"code": code, "message": "try again"}}, headers)


def error(status: int, code: str, field: str | None = None) -> Answer:
    err: dict[str, Any] = {"code": code, "message": f"{code}!"}
    if field is not None:
        err["field"] = field
    return Answer(status, {"error": err})


class Scripted:
    """`script(path, *answers)` queues answers; `default(path, answer)` answers after."""

    def __init__(self) -> None:
        self.got: list[Got] = []
        self.answered: list[tuple[Got, int]] = []  # each request and its status
        self._script: dict[str, deque[Script]] = {}
        self._default: dict[str, Script] = {}
        self._lock = threading.Lock()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def script(self, path: str, *answers: Script) -> None:
        with self._lock:
            self._script.setdefault(path, deque()).extend(answers)

    def default(self, path: str, answer: Script) -> None:
        with self._lock:
            self._default[path] = answer

    def acked(self, path: str) -> list[Got]:
        """The requests of `path` answered 2xx."""
        with self._lock:
            return [g for g, status in self.answered if g.path == path and status < 300]

    def requests(self, path: str | None = None) -> list[Got]:
        with self._lock:
            return [g for g in self.got if path is None or g.path == path]

    async def _handle(self, request: Request) -> Response:
        got = Got(request.method, request.url.path, dict(request.headers), await request.body())
        with self._lock:
            self.got.append(got)
            queued = self._script.get(got.path)
            step = queued.popleft() if queued else self._default.get(got.path, plausible)
        answer = step(got) if callable(step) else step
        with self._lock:
            self.answered.append((got, answer.status))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        body, media = answer.body, "text/plain"
        if not isinstance(body, bytes):
            if "msgpack" in got.headers.get("accept", ""):
                body, media = msgpack.packb(body), "application/msgpack"
            else:
                body, media = json.dumps(body).encode(), "application/json"
        return Response(body, answer.status, answer.headers, media_type=media)

    def start(self) -> Scripted:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the scripted server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextmanager
def scripted(n: int = 1) -> Iterator[list[Scripted]]:
    servers = [Scripted().start() for _ in range(n)]
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def closed_port() -> str:
    """A URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def slot_map(
    epoch: int, ranges: list[tuple[int, int, int]], endpoints: dict[int, str | None]
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "slots": [list(r) for r in ranges],
        "shards": [{"shard": s, "endpoint": e} for s, e in sorted(endpoints.items())],
    }
