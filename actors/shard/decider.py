"""The decide path of a shard (the hot path): answer a retried request id again
(`answers.py`), check the request, apply its triggering event, pick the customer's
variant, choose the channel of an outbound decision, decide
(`decisioning/policy/decide.py`), then record it, spend budgets and log it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from actors.messages import Decide, Decided
from actors.shard.allowance import Allowance
from actors.shard.answers import extra_of, request_key
from actors.shard.decisions import DecisionHistory
from actors.shard.identity import Identity
from actors.shard.intake import Intake
from actors.shard.profiles import Profiles
from actors.shard.served import Served
from decisioning.config import OUTBOUND, DecisioningSpec
from decisioning.errors import InvalidInput
from decisioning.policy.decide import (
    ChannelChoice,
    DecisionRequest,
    LoadedModel,
    Stages,
    choose_channel,
    decide,
)
from decisioning.profile import Event
from decisioning.profile.slots import slot_of
from decisioning.stores.decision_log import DecisionLog

__all__ = ["Decider"]


class Decider:
    """Makes one customer's decision from a `Decide` request; `stages`, when set, adds
    up the time of each step (the benchmark)."""

    def __init__(
        self,
        served: Served,
        profiles: Profiles,
        allowance: Allowance,
        history: DecisionHistory,
        intake: Intake,
        identity: Identity,
        logs: DecisionLog | None,
        clock: Callable[[], float],
    ) -> None:
        self.served = served
        self.profiles = profiles
        self.allowance = allowance
        self.history = history
        self.intake = intake
        self.identity = identity
        self.logs = logs
        self.clock = clock
        self.stages: Stages | None = None

    def decide(self, request: Decide) -> Decided:
        """The decision, its variant and (channel "outbound") how its channel was chosen;
        the request's triggering event is applied first (not in a dry run). A request id
        answered before gets that answer again, and nothing else happens."""
        served, cfg = self.served, self.served.config.decisioning
        customer_id = request.customer_id
        self.identity.here(customer_id)
        dry_run = request.dry_run
        key = None
        if request.request_id is not None and not dry_run:  # (a dry run: ignored)
            key = request_key(customer_id, request.request_id)
            answered = self.history.answers.get(key)
            if answered is not None:
                again = self.history.answers.again(answered, request)
                self.profiles.counters["decisions_repeated"] += 1
                return again
        channel, limit, outbound = self._checked(request, cfg)
        if request.event is not None:
            self._triggering_event(request.event, customer_id, dry_run)
        now = self.clock()
        models, variant, shadows = served.variant(customer_id)
        profile = self.profiles.store.features(customer_id, now)
        choice = None
        context = request.context or {}
        if outbound:  # choose the channel first, then decide on it
            choice = self._outbound_channel(request, context, profile, now, models)
            channel = choice.channel
        r = DecisionRequest(
            f"d-{slot_of(customer_id):04x}-{os.urandom(8).hex()}",
            customer_id,
            profile,
            channel,
            request.placement,
            context,
            limit,
            served.catalog,
            models,
            cfg,
            now,
            explain=request.explain,
            stages=self.stages,
            trace=self.logs is not None and not dry_run,
            explorer=None if dry_run else served.explorer,
            limits=self.allowance.limits(customer_id, now, channel),
            contact_cost=cfg.outbound.costs.get(channel, 0.0) if outbound else None,
            tables=served.tables,
        )
        decision = decide(r)
        if decision.explored:
            variant = "explore"
        decided = Decided(decision, variant, choice)
        if not dry_run:
            self._record(r, decided, context, shadows, key)
        self.profiles.counters["decisions"] += 1
        return decided

    def _checked(self, request: Decide, cfg: DecisioningSpec) -> tuple[str, int, bool]:
        """The request's channel, limit, and whether it is an outbound decision."""
        channel = request.channel
        outbound = channel == OUTBOUND
        if outbound and not cfg.outbound.channels:
            raise InvalidInput(
                "no outbound channels are configured (decisioning.outbound.channels)",
                field="channel",
                code="unknown_channel",
            )
        if not outbound and channel not in self.served.catalog.by_channel:
            raise InvalidInput(
                f"unknown channel {channel!r}", field="channel", code="unknown_channel"
            )
        limit = 1 if outbound else request.limit or cfg.default_limit  # one message
        if not 1 <= limit <= cfg.max_limit:
            raise InvalidInput(f"limit must be between 1 and {cfg.max_limit}", field="limit")
        return channel, limit, outbound

    def _triggering_event(self, event: Event, customer_id: str, dry_run: bool) -> None:
        if event.customer_id != customer_id:  # (the event is the decision's customer's)
            event = replace(event, customer_id=customer_id)
        try:
            self.profiles.schema.check_event(event, self.clock())
        except InvalidInput as e:
            field = f"event.{e.field}" if e.field else "event"
            raise InvalidInput(e.message, field=field, code=e.code) from None
        if not dry_run:
            self.profiles.counters["events"] += len(self.intake.apply([event], None))

    def _record(
        self,
        r: DecisionRequest,
        decided: Decided,
        context: dict[str, Any],
        shadows: dict[str, LoadedModel],
        key: bytes | None,
    ) -> None:
        d, variant = decided.decision, decided.variant
        self.allowance.spend(d.actions, r.now)  # (available: the decision checked it)
        self.history.record(d, key, None if key is None else extra_of(decided))
        if self.logs is not None:
            shadow_scores = None
            if shadows:  # the same candidates, scored by the shadow models too
                shadow = r._replace(
                    models=shadows, stages=None, explorer=None, explain=False, trace=True
                )
                shadow_scores = decide(shadow).trace
            self.logs.decision(d, context, variant, shadow=shadow_scores)

    def _outbound_channel(
        self,
        request: Decide,
        context: Mapping[str, Any],
        profile: np.ndarray,
        now: float,
        models: dict[str, LoadedModel],
    ) -> ChannelChoice:
        """Decide once per outbound channel, greedily and without recording anything
        (consent, rules, contact policies, budgets, the channel's outbound rule and its
        cost all apply), then pick the channel (see `choose_channel`)."""
        served, customer_id = self.served, request.customer_id
        ob = served.config.decisioning.outbound
        probes = {
            ch: decide(
                DecisionRequest(
                    "probe",
                    customer_id,
                    profile,
                    ch,
                    request.placement,
                    context,
                    1,
                    served.catalog,
                    models,
                    served.config.decisioning,
                    now,
                    limits=self.allowance.limits(customer_id, now, ch),
                    contact_cost=ob.costs.get(ch, 0.0),
                    tables=served.tables,
                )
            )
            for ch in ob.channels
        }
        preferred = None
        if ob.preference_attribute is not None:
            preferred = self.profiles.schema.category(profile, ob.preference_attribute)
        return choose_channel(probes, ob.costs, preferred)
