"""The load generator against a real local HTTP/1.1 server (asyncio, in a thread): it
counts every answer by status, reads chunked answers, keeps to its connection limit, and
counts a request with no answer in time as status 0."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from bench.loadgen import build_requests, closed_loop, open_loop


class Server:
    """/ok answers 200 with a body, /busy a chunked 503 (as Serve sheds), /hang never."""

    def __init__(self) -> None:
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                path = head.split(b" ")[1]
                if path == b"/hang":
                    await asyncio.Event().wait()
                elif path == b"/busy":
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"4\r\nbusy\r\n5;x=1\r\nagain\r\n0\r\n\r\n"
                    )
                else:
                    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> Server:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        async def cancel_handlers() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(cancel_handlers(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server().start()
    yield s
    s.stop()


def _requests(server: Server, path: str) -> list[bytes]:
    return build_requests(server.port, path, [b"{}", b'{"a":1}'], "application/json", "k")


def test_closed_loop_counts_every_answer_on_its_connections(server: Server) -> None:
    r = closed_loop(server.port, _requests(server, "/ok"), 3, 0.2)
    assert r.requests > 0 and r.statuses == {200: r.requests} and r.errors == 0
    assert r.rps == pytest.approx(r.requests / r.seconds) and r.rate is None
    assert server.connections == 3


def test_fast_refusals_are_no_throughput(server: Server) -> None:
    r = closed_loop(server.port, _requests(server, "/busy"), 2, 0.2)
    assert r.requests > 0 and r.statuses == {503: r.requests} and r.errors == r.requests
    assert r.rps == 0.0  # many answers a second, none of them a 2xx


def test_open_loop_sends_at_the_rate_within_the_connection_limit(server: Server) -> None:
    r = open_loop(server.port, _requests(server, "/ok"), 100.0, 0.3, max_connections=2)
    assert r.requests == 30 and r.statuses == {200: 30} and r.errors == 0 and r.rate == 100.0
    assert 1 <= server.connections <= 2
    assert r.admitted_p99_ms == pytest.approx(r.p99_ms, rel=0.01)  # every answer a 200


def test_chunked_refusals_are_read_whole_and_the_connection_reused(server: Server) -> None:
    r = open_loop(server.port, _requests(server, "/busy"), 100.0, 0.2, max_connections=1)
    assert r.statuses == {503: 20} and r.errors == 20 and server.connections == 1
    assert r.admitted_p99_ms == 0.0  # no 200 among them


def test_no_answer_in_time_is_status_zero_and_no_more_connections_open(server: Server) -> None:
    r = open_loop(
        server.port, _requests(server, "/hang"), 20.0, 0.2, max_connections=1, timeout_s=1.0
    )
    assert r.statuses == {0: 4} and r.errors == 4 and r.requests == 4
    assert r.admitted_p99_ms == 0.0
    # the first request holds the one connection; the others wait for it until their time
    assert server.connections == 1
