"""Where each request goes: its customers' shard's own endpoint, or the ingress.

The map is `GET /v1/cluster/slots`, fetched when first needed and again when a shard
answers 421 `slot_moved` (the map moved on) or its endpoint does not answer (restarting:
it comes back on another port, named by a later map). The state here is plain; the
client that owns it does the fetching, one fetch at a time: a caller notes
`generation` before it asks, and a fetch that another caller finished meanwhile
(the generation moved) is not repeated.
"""

from __future__ import annotations

from collections.abc import Iterable

from nextbest_client.slots import SlotMap

__all__ = ["DOWN_S", "FETCH_AGAIN_S", "Routing"]

DOWN_S = 1.0  # an endpoint that refused a connection gets no request for this long
FETCH_AGAIN_S = 1.0  # after a failed fetch, the ingress serves everything for this long


class Routing:
    """The slot map as this client knows it, and the endpoints found down lately."""

    def __init__(self, url: str, enabled: bool) -> None:
        self.url = url.rstrip("/")
        self.enabled = enabled
        self.map: SlotMap | None = None
        self.generation = 0  # grows with every fetch that ended, answered or not
        self.stale = True
        self.fetch_after = 0.0
        self.down: dict[str, float] = {}  # endpoint -> until (monotonic seconds)

    def wants_fetch(self, now: float) -> bool:
        """A routed request should fetch the map first."""
        return self.enabled and self.stale and now >= self.fetch_after

    def install(self, new: SlotMap) -> None:
        """A fetched map; one older than the map held (a lagging answer) is ignored."""
        if self.map is None or new.epoch >= self.map.epoch:
            self.map = new
        self.generation += 1
        self.stale = False

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
            if ep is None or (found is not None and ep != found):
                return None
            found = ep
        if found is not None and self.down.get(found, 0.0) > now:
            return None
        return found
