"""One request's attempts, without I/O: where to send it, and what an answer means.

The sync and the async client each drive an `Exchange` the same way:

    ex = Exchange(call, routing, retry, now())
    while True:
        target = ex.target(now())                    # the owner's endpoint, or the ingress
        answer = send(target)                        # status + headers + body, or an error
        step = ex.answered(...) / ex.failed(...)     # Done, Again, or raises
        refetch the map if step.refresh; sleep step.wait

- 2xx: done.
- 421 `slot_moved` (only a shard's endpoint, asked `X-Nextbest-Route: strict`, says it):
  the map moved on. Fetch it and send again at once; a second 421 for the same request
  (this client's map and the shard's disagree still) goes through the ingress, which
  routes everything.
- A transport error at a shard's endpoint (its shard restarting: the port is gone):
  the endpoint is left alone for a second, the map fetched again, and this request
  goes through the ingress, which answers 503 until the shard is back.
- 503 or 429: wait `Retry-After` (at most `max_wait`, stretched by up to `jitter`);
  a transport error at the ingress: wait 50 ms, doubled each time, up to `max_wait`.
  Then send the same bytes again. When the next wait would end past the deadline the
  error is raised instead.
- Any other status: raised at once (errors.py).

Sending the same bytes again is what makes a retry safe: events carry `event_id`s the
client gave them before the first attempt, an outcome is recorded once per decision
and action, and a decision with a `request_id` is made once. A decision without one
may have been made (and recorded) by an attempt that got no answer; the retry makes
another, the one the caller gets (docs/client.md#retries).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from nextbest_client.errors import NextbestError, Unreachable, error_of
from nextbest_client.routing import Routing

__all__ = ["Again", "Call", "Done", "Exchange", "Retry", "Target", "parse_retry_after"]

STRICT = {"x-nextbest-route": "strict"}


@dataclass(frozen=True, slots=True)
class Retry:
    """How long a request keeps trying (`deadline` seconds from its first attempt; 0:
    once) and how long it waits between attempts."""

    deadline: float = 10.0
    max_wait: float = 2.0  # the cap on one wait, Retry-After included
    backoff: float = 0.05  # the first wait when the server named none; doubled each time
    jitter: float = 0.2  # a wait is stretched by up to this fraction (clients spread out)

    def wait(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """The wait before attempt `attempt + 1` (`rand` in [0, 1))."""
        base = self.backoff * 2.0 ** min(attempt, 30) if retry_after is None else retry_after
        return min(max(base, 0.0), self.max_wait) * (1.0 + self.jitter * rand)


def parse_retry_after(value: str | None, wall_now: float) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - wall_now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True, slots=True)
class Call:
    """A request: method, path, encoded body (None: none) and the slots of the
    customers it is for (empty: the ingress serves it)."""

    method: str
    path: str
    body: bytes | None = None
    slots: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    """Where an attempt goes: `base` URL; `strict`: a shard's own endpoint."""

    base: str
    strict: bool
    generation: int  # of the map it was chosen by

    @property
    def headers(self) -> dict[str, str]:
        return STRICT if self.strict else {}


@dataclass(frozen=True, slots=True)
class Done:
    value: Any


@dataclass(frozen=True, slots=True)
class Again:
    """Send again after `wait` seconds; first fetch the map if `refresh` (unless a fetch
    newer than `generation` ended meanwhile)."""

    wait: float = 0.0
    refresh: bool = False
    generation: int = 0


class Exchange:
    """The attempts of one `Call` (see the module docstring)."""

    def __init__(
        self, call: Call, routing: Routing, retry: Retry, now: float, rand: Any = random.random
    ) -> None:
        self.call = call
        self.routing = routing
        self.retry = retry
        self.deadline = now + retry.deadline
        self.rand = rand
        self.via_ingress = not call.slots
        self.waits = 0  # waits taken so far (the backoff's exponent)
        self.moved = 0  # 421s answered so far

    def target(self, now: float) -> Target:
        r = self.routing
        endpoint = None if self.via_ingress else r.endpoint_for(self.call.slots, now)
        if endpoint is None:
            return Target(r.url, False, r.generation)
        return Target(endpoint, True, r.generation)

    def timeout(self, now: float, limit: float) -> float:
        """The attempt's timeout: `limit`, but not (much) past the deadline."""
        return max(0.5, min(limit, self.deadline - now))

    def answered(
        self, target: Target, status: int, body: Any, retry_after: float | None, now: float
    ) -> Done | Again:
        if 200 <= status < 300:
            return Done(body)
        if status == 421 and target.strict and now < self.deadline:
            self.moved += 1
            if self.moved > 1:  # the map this client fetched did not help: let the ingress
                self.via_ingress = True
            self.routing.invalidate()
            return Again(0.0, True, target.generation)
        err = error_of(status, body, retry_after)
        if status in (429, 503):
            return self._later(err, retry_after, now)
        raise err

    def failed(self, target: Target, exc: BaseException, now: float) -> Again:
        """The attempt got no answer (refused, reset, timed out)."""
        err = Unreachable(f"{target.base}{self.call.path}: {type(exc).__name__}: {exc}")
        if target.strict:  # the shard's port: it is restarting; the ingress knows
            self.routing.mark_down(target.base, now)
            self.via_ingress = True
            if now >= self.deadline:
                raise err from exc
            return Again(0.0, True, target.generation)
        try:
            return self._later(err, None, now)
        except NextbestError as e:
            raise e from exc

    def _later(self, err: NextbestError, retry_after: float | None, now: float) -> Again:
        wait = self.retry.wait(self.waits, retry_after, self.rand())
        if now + wait > self.deadline:
            raise err
        self.waits += 1
        return Again(wait)
