"""A webhook receiver on 127.0.0.1 for delivery tests (unit and integration)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Stores what is POSTed to it with its Idempotency-Key. With `flaky`, it answers
    503 to every third request, and to every fifth it stores the message first and then
    answers 500 (the sender cannot tell: it retries, and a duplicate arrives)."""

    def __init__(self, flaky: bool = False) -> None:
        self.stored: list[tuple[str, dict[str, Any]]] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with receiver.lock:
                    receiver.requests += 1
                    n = receiver.requests
                    status = 200
                    if flaky and n % 3 == 0:
                        status = 503
                    else:
                        receiver.stored.append((self.headers["idempotency-key"], body))
                        if flaky and n % 5 == 0:
                            status = 500
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
