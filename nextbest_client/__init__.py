"""A Python client for nextbest that sends each customer's requests to the shard that
owns the customer (its own port: no hop inside the server), retries what is safe to
retry until a deadline, and batches events like a Kafka producer.

    from nextbest_client import Client

    with Client("http://127.0.0.1:8000", api_key) as nb:
        d = nb.decide("c-42", "web", placement="home_hero", limit=3)
        nb.send_event("c-42", "page_view", {"page": "loans"})
        nb.outcome(d.decision_id, d.actions[0].action_id, "click")

`AsyncClient` has the same API as coroutines. Routing, retries, the producer and the
errors are described in docs/client.md.
"""

from __future__ import annotations

from nextbest_client.aclient import AsyncClient
from nextbest_client.client import Client
from nextbest_client.common import Stats
from nextbest_client.errors import (
    BadRequest,
    Conflict,
    NextbestError,
    NotFound,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from nextbest_client.producer import AsyncProducer, Producer
from nextbest_client.results import Accepted, Action, Decision, Profile
from nextbest_client.slots import SLOTS, SlotMap, decision_slot, slot_of

__all__ = [
    "SLOTS",
    "Accepted",
    "Action",
    "AsyncClient",
    "AsyncProducer",
    "BadRequest",
    "Client",
    "Conflict",
    "Decision",
    "NextbestError",
    "NotFound",
    "Producer",
    "Profile",
    "SlotMap",
    "Stats",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "decision_slot",
    "slot_of",
]
