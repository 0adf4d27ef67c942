"""Where each request goes: its customers' shard's own endpoint, or the ingress.

The map is `GET /v1/cluster/slots`, fetched when first needed and again when a shard
answers 421 `slot_moved` (the map moved on) or its endpoint does not answer (restarting:
it comes back on another port, named by a later map). While a request's owner has no
endpoint (null in the map: restarting, or shard ports are off) the request goes to the
ingress, and the map is fetched again after a second, then after 2, 4, up to 10 s while
the endpoints stay the same. The state here is plain; the
client that owns it does the fetching, one fetch at a time: a caller notes
`generation` before it asks, and a fetch that another caller finished meanwhile
(the generation moved) is not repeated.
"""

from __future__ import annotations

from collections.abc import Iterable

from nextbest_client.slots import SlotMap

__all__ = ["DOWN_S", "FETCH_AGAIN_S", "REFETCH_S", "Routing"]

DOWN_S = 1.0  # an endpoint that refused a connection gets no request for this long
FETCH_AGAIN_S = 1.0  # after a failed fetch, the ingress serves everything for this long
REFETCH_S = (1.0, 10.0)  # while an owner has no endpoint: the first and longest interval


class Routing:
    """The slot map as this client knows it, and the endpoints found down lately."""

    def __init__(self, url: str, enabled: bool) -> None:
        self.url = url.rstrip("/")
        self.enabled = enabled
        self.map: SlotMap | None = None
        self.generation = 0  # grows with every fetch that ended, answered or not
        self.stale = True
        self.fetch_after = 0.0
        self.fetched_at = 0.0
        self.refetch_s = REFETCH_S[0]  # while an owner has no endpoint
        self.missing = False  # the fetch to come asks for a missing endpoint
        self.down: dict[str, float] = {}  # endpoint -> until (monotonic seconds)

    def wants_fetch(self, now: float) -> bool:
        """A routed request should fetch the map first."""
        return self.enabled and self.stale and now >= self.fetch_after

    def install(self, new: SlotMap, now: float) -> None:
        """A fetched map; one older than the map held (a lagging answer) is ignored."""
        old = self.map
        current = self.map = new if old is None or new.epoch >= old.epoch else old
        same = old is not None and dict(old.endpoints) == dict(current.endpoints)
        if self.missing and same:  # asked again for a missing endpoint, in vain: wait longer
            self.refetch_s = min(self.refetch_s * 2, REFETCH_S[1])
        else:
            self.refetch_s = REFETCH_S[0]
        self.missing = False
        self.generation += 1
        self.stale = False
        self.fetched_at = now

    def fetch_failed(self, now: float) -> None:
        self.generation += 1
        self.fetch_after = now + FETCH_AGAIN_S

    def invalidate(self) -> None:
        """The map may be out of date: the next routed request fetches it."""
        self.stale = True
        self.fetch_after = 0.0

    def mark_down(self, endpoint: str, now: float) -> None:
        self.down[endpoint] = now + DOWN_S
        self.invalidate()

    def endpoint_for(self, slots: Iterable[int], now: float) -> str | None:
        """The one endpoint that owns every slot of `slots`, or None: the ingress
        (routing off, no map yet, no slots, several owners, or an owner without an
        endpoint or found down)."""
        m = self.map
        if not self.enabled or m is None:
            return None
        found: str | None = None
        for slot in slots:
            ep = m.endpoint_of(slot)
            if ep is None:  # restarting (or no shard ports): ask again in a while
                if not self.stale and now >= self.fetched_at + self.refetch_s:
                    self.stale = self.missing = True
                return None
            if found is not None and ep != found:
                return None
            found = ep
        if found is not None and self.down.get(found, 0.0) > now:
            return None
        return found
