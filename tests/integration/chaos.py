"""Steady event load with retrying clients while something is killed, and the count.

Each sender thread sends single events at its share of the rate, each with a fresh
`event_id`, and retries an event (same id) until it is acknowledged, as a channel
would. Afterwards every customer's count must equal the acknowledged events: fewer is a
lost ack, more is an event applied twice. `make chaos` (NEXTBEST_CHAOS=1) runs the long
variants (a kill every 15 s for 90 s) and the tests marked `chaos`; `make test` runs
short ones (two kills in 12 s). NEXTBEST_CHAOS_SECONDS/_EVERY/_RATE override.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from decisioning.profile.slots import contiguous_map, slot_of
from tests.integration.harness import Server

CHAOS = os.environ.get("NEXTBEST_CHAOS") == "1"  # `make chaos`: the long variants
SECONDS = float(os.environ.get("NEXTBEST_CHAOS_SECONDS", "90" if CHAOS else "12"))
EVERY = float(os.environ.get("NEXTBEST_CHAOS_EVERY", "15" if CHAOS else "5"))
RATE = float(os.environ.get("NEXTBEST_CHAOS_RATE", "500"))
EVENT_DEADLINE_S = 60.0  # an event not acknowledged within this is a failure


@dataclass
class Figures:
    """What a run saw: the numbers that go into the README's reliability section."""

    acked: int = 0
    lost: int = 0
    doubled: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # 0: no answer (connection)
    other_5xx: int = 0
    longest_unavailable_s: float = 0.0  # the longest a client retried one event
    kills: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    def line(self, what: str) -> str:
        return (
            f"{what}: {self.kills} kills in {self.seconds:.0f}s, {self.acked} events acked "
            f"({self.rate:.0f}/s), lost {self.lost}, doubled {self.doubled}, other 5xx "
            f"{self.other_5xx}, longest unavailability {self.longest_unavailable_s:.2f}s, "
            f"answers {dict(sorted(self.statuses.items()))}"
        )


def customers_per_shard(server: Server, n: int, prefix: str) -> dict[int, list[str]]:
    """`n` customer ids on each shard."""
    owners = contiguous_map(server.config.server.shards)
    out: dict[int, list[str]] = {i: [] for i in range(server.config.server.shards)}
    i = 0
    while any(len(v) < n for v in out.values()):
        c = f"{prefix}-{i}"
        if len(out[owners[slot_of(c)]]) < n:
            out[owners[slot_of(c)]].append(c)
        i += 1
    return out


def under_load(
    server: Server,
    customers: list[str],
    kill: Callable[[int], None],
    seconds: float = SECONDS,
    every: float = EVERY,
    rate: float = RATE,
    threads: int = 6,
    changes: int = 0,
    route: Callable[[str, int], tuple[str, dict[str, str]]] | None = None,
) -> Figures:
    """Send events at `rate`/s for `seconds` while calling `kill(i)` every `every` s
    (and, however long each took on a loaded machine, at least `changes` times); then
    count. Fails on any exception in a sender (an event never acknowledged). `route`
    (customer, the status of its last try: -1 before the first, 0 no answer) gives the
    URL an event goes to and extra headers (default: the ingress); a 421 is then
    retried like a 503."""
    figures = Figures()
    acked: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    prefix = f"ch-{os.urandom(4).hex()}"

    def send(t: int) -> None:
        interval = threads / rate
        n = 0
        with httpx.Client(base_url=server.url, timeout=10, headers=server.headers) as c:
            next_at = time.monotonic()
            while not stop.is_set():
                cid = customers[(n * threads + t) % len(customers)]
                ev = {"customer_id": cid, "type": "page_view", "event_id": f"{prefix}-{t}-{n}"}
                first_failure = None
                started = time.monotonic()
                status = -1  # (not sent yet)
                while True:  # retry the same event until acknowledged
                    where, extra = route(cid, status) if route else (server.url, {})
                    try:
                        answer = c.post(f"{where}/v1/events", json=ev, headers=extra)
                        status, last = answer.status_code, answer.text[:300]
                    except httpx.HTTPError as e:
                        status, last = 0, repr(e)
                    with lock:
                        figures.statuses[status] += 1
                        if status >= 500 and status != 503:
                            figures.other_5xx += 1
                    if status == 200:
                        break
                    moved = route is not None and status == 421  # sent to a shard that lost it
                    if status not in (0, 503, 429) and not moved and status < 500:
                        raise AssertionError(f"event {ev['event_id']}: {status}")
                    first_failure = first_failure or time.monotonic()
                    if time.monotonic() - started > EVENT_DEADLINE_S:
                        raise AssertionError(
                            f"event {ev['event_id']} of {cid} never acknowledged; last: {last}"
                        )
                    time.sleep(0.05)  # a client's retry backoff, not synchronisation
                if first_failure is not None:
                    with lock:
                        figures.longest_unavailable_s = max(
                            figures.longest_unavailable_s, time.monotonic() - first_failure
                        )
                with lock:
                    acked[cid] += 1
                    figures.acked += 1
                n += 1
                next_at += interval
                if (pause := next_at - time.monotonic()) > 0:
                    time.sleep(pause)  # pacing to the rate
                else:
                    next_at = time.monotonic()

    def guarded(t: int) -> None:
        try:
            send(t)
        except BaseException as e:  # noqa: BLE001 - handed to the test below
            errors.append(e)

    senders = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in range(threads)]
    started = time.monotonic()
    for s in senders:
        s.start()
    try:
        kills = 0
        while ((elapsed := time.monotonic() - started) < seconds or kills < changes) and not errors:
            wait = (kills + 1) * every - elapsed
            if wait <= 0:
                kill(kills)
                kills += 1
            else:
                stop.wait(max(0.0, min(wait, seconds - elapsed)) if kills >= changes else wait)
        figures.kills = kills
    finally:
        stop.set()
        for s in senders:
            s.join(EVENT_DEADLINE_S + 30)
    figures.seconds = time.monotonic() - started
    if errors:
        raise AssertionError(f"{len(errors)} senders failed: {figures.line('so far')}") from errors[
            0
        ]
    assert not any(s.is_alive() for s in senders), "a sender did not stop"
    counts = profile_counts(server, customers)
    for cid in customers:
        if counts[cid] < acked[cid]:
            figures.lost += acked[cid] - counts[cid]
        elif counts[cid] > acked[cid]:
            figures.doubled += counts[cid] - acked[cid]
    return figures


def profile_counts(server: Server, customers: list[str]) -> dict[str, int]:
    """Each customer's page views as the server has them (waiting out a 503)."""
    out = {}
    with server.client() as c:
        for cid in customers:
            deadline = time.monotonic() + 60
            while (r := c.get(f"/v1/profiles/{cid}")).status_code == 503:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            assert r.status_code == 200, r.text
            out[cid] = int(r.json()["aggregates"]["page_views_24h"])
    return out
