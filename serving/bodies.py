"""The wire bodies of what the shards answer, built once, here at the edge.

A shard answers with typed results (actors/messages.py): a core `Decision` with its
variant, queued `Message`s, a `Profile`. Each route turns its result into the body it
sends with one function below, so the v1 wire form of a result is written in one place
and nothing a shard keeps is an HTTP answer. The key order is the one the API has always
had. `serving/answers.py` describes these bodies for the OpenAPI document, and
tests/unit/serving/test_answers.py checks real shards' results, through these functions,
against it.
"""

from __future__ import annotations

from typing import Any

from actors.messages import Decided, Erased, Leased, Profile

__all__ = ["decision_body", "erased_body", "message_body", "opened_body", "profile_body"]


def decision_body(d: Decided) -> dict[str, Any]:
    """POST /v1/decide: the decision, its variant and (outbound) its channel choice."""
    out = d.decision.to_wire()
    out["variant"] = d.variant
    if d.channel_choice is not None:
        out["channel_choice"] = d.channel_choice.to_wire()
    return out


def opened_body(d: Decided, message_id: str) -> dict[str, Any]:
    """GET /v1/open/{token}: the decision made as the message is opened."""
    out = decision_body(d)
    out["message_id"] = message_id
    return out


def message_body(leased: Leased) -> dict[str, Any]:
    """A message of GET /v1/outbound (and what a sink delivers): the trigger's decision
    as /v1/decide answered it, and the token that opens it."""
    return leased.message.to_wire(leased.open_token)


def profile_body(p: Profile) -> dict[str, Any]:
    """GET /v1/profiles/{customer_id}."""
    return {
        "customer_id": p.customer_id,
        "known": p.known,
        "attributes": p.attributes,
        "aggregates": p.aggregates,
        "consent": p.consent,
        "recent_decisions": [
            {
                "decision_id": r.decision_id,
                "ts": r.ts,
                "channel": r.channel,
                "placement": r.placement,
                "actions": list(r.actions),
                "model_version": r.model_version,
            }
            for r in p.recent_decisions
        ],
        "shard": p.shard,
    }


def erased_body(e: Erased) -> dict[str, Any]:
    """DELETE /v1/profiles/{customer_id}."""
    return {
        "customer_id": e.customer_id,
        "erased": e.erased,
        "decisions_removed": e.decisions_removed,
    }
