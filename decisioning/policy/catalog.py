"""The action catalog, compiled once: rules resolved against the profile schema."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from decisioning.config import ActionSpec, Config
from decisioning.errors import RuleError
from decisioning.policy.rules import Env, FieldInfo, Rule, compile_rule
from decisioning.profile import ProfileSchema

__all__ = ["Action", "Catalog", "RuleLocation", "Trigger", "make_resolver"]

STAGES = ("eligibility", "applicability", "suitability")
Resolver = Callable[[str, str], FieldInfo | None]  # (namespace, name) -> the field, or None
_ACTION_FIELDS = {"id": "str", "group": "str", "value": "num", "lever": "num"}


@dataclass(frozen=True, slots=True)
class RuleLocation:
    """Where in the config a rule that failed to compile lives (for the error message)."""

    field: str
    error: RuleError


@dataclass(frozen=True, slots=True)
class Action:
    """A catalog action with its rules compiled."""

    index: int
    id: str
    group: str
    channels: frozenset[str]
    lever: float
    model: str | None
    start: float
    end: float
    value_const: float
    value_rule: Rule | None
    eligibility: Rule | None  # the action's own (also in `rules`)
    # every rule it must pass, in order: (stage, rule), group rules before the action's
    rules: tuple[tuple[str, Rule], ...] = ()
    mandatory: bool = False

    def value(self, env: Env) -> float:
        """The action's business value for this customer and context (0 when null)."""
        if self.value_rule is None:
            return self.value_const
        v = self.value_rule(env)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return 0.0
        return float(v)


@dataclass(frozen=True, slots=True)
class Trigger:
    """A catalog trigger with its condition compiled."""

    id: str
    on: frozenset[str]
    when: Rule | None
    crossing: bool
    not_followed_by: frozenset[str]
    within: float | None
    channel: str
    placement: str | None

    @property
    def timed(self) -> bool:
        """Armed by `on`, fired by a timer unless a `not_followed_by` event comes first."""
        return self.within is not None


def make_resolver(
    config: Config,
    schema: ProfileSchema,
    *,
    allow_action_value: bool = True,
    allow_action: bool = True,
    allow_event: bool = False,
) -> Resolver:
    """The name resolver rules compile against: profile, consent, context, action fields
    (and, in trigger conditions, the event: `event.type` and its properties)."""
    ctx_fields = {c.name: c for c in config.context}

    def resolve(ns: str, name: str) -> FieldInfo | None:
        if ns == "profile":
            idx = schema.index.get(name)
            if idx is None or name.startswith("consent_"):
                return None
            vocab = schema.categories.get(name)
            return FieldInfo(ns, name, idx, "str" if vocab else "num", vocab)
        if ns == "consent":
            idx = schema.index.get(f"consent_{name}")
            return None if idx is None else FieldInfo(ns, name, idx, "bool")
        if ns == "context":
            if name == "channel":
                return FieldInfo(ns, name, name, "str", tuple(config.channels))
            if name == "placement":
                return FieldInfo(ns, name, name, "str")
            spec = ctx_fields.get(name)
            if spec is None:
                return FieldInfo(ns, name, name, "any")
            vocab = tuple(spec.values) if spec.values else None
            return FieldInfo(ns, name, name, "num" if spec.type == "numeric" else "str", vocab)
        if ns == "table":
            table, _, column = name.partition(".")
            tspec = config.context_tables.get(table)
            if tspec is None or column not in tspec.columns:
                return None
            kind = tspec.columns[column]
            return FieldInfo(ns, name, name, "num" if kind == "numeric" else "str")
        if ns == "event" and allow_event:
            return FieldInfo(ns, name, name, "str" if name == "type" else "any")
        if ns == "score" and allow_event:  # a customer-level model, scored on the event
            return FieldInfo(ns, name, name, "num")
        if ns == "action" and name in _ACTION_FIELDS and allow_action:
            if name == "value" and not allow_action_value:
                return None
            return FieldInfo(ns, name, name, _ACTION_FIELDS[name])
        return None

    return resolve


class _Compiler:
    """Compiles the rules at each place of the config, collecting every failure (with
    where it is) so one CatalogError lists them all, in config order."""

    def __init__(self, config: Config, schema: ProfileSchema) -> None:
        self.config, self.schema = config, schema
        self.errors: list[RuleLocation] = []
        self.resolve = make_resolver(config, schema)

    def resolver(self, **allow: bool) -> Resolver:
        """A resolver that lets rules at some place see more, or fewer, names."""
        return make_resolver(self.config, self.schema, **allow)

    def at(self, field: str, source: str, resolver: Resolver | None = None) -> Rule | None:
        """The rule at `field`, or None (the failure recorded)."""
        try:
            return compile_rule(source, self.resolve if resolver is None else resolver)
        except RuleError as e:
            self.errors.append(RuleLocation(field, e))
            return None


def _actions(c: _Compiler) -> list[Action]:
    """Every action with its rules; a group's rules are compiled once, shared by the group."""
    d = c.config.decisioning
    resolve_value = c.resolver(allow_action_value=False)
    compiled: dict[str, Rule] = {}
    actions = []
    for i, spec in enumerate(c.config.actions):
        lever = spec.lever * d.group_levers.get(spec.group, 1.0)
        lever *= d.issue_levers.get(spec.issue or "", 1.0)
        actions.append(_action(i, spec, c, resolve_value, lever, d.groups, compiled))
    return actions


def _action(
    i: int,
    spec: ActionSpec,
    c: _Compiler,
    resolve_value: Resolver,
    lever: float,
    group_rules: Mapping[str, Any],
    compiled: dict[str, Rule],
) -> Action:
    """One action: its value, and its rules stage by stage (the group's before its own)."""
    value_rule = None
    value_const = 0.0
    if isinstance(spec.value, str):
        value_rule = c.at(f"actions[{i}].value", spec.value, resolve_value)
    else:
        value_const = float(spec.value)
    rules: list[tuple[str, Rule]] = []
    eligibility = None
    for stage in STAGES:
        group_source = getattr(group_rules.get(spec.group), stage, None)
        if group_source is not None:
            where = f"decisioning.groups.{spec.group}.{stage}"
            rule = compiled.get(where) or c.at(where, group_source)
            if rule is not None:
                compiled[where] = rule
                rules.append((f"group {stage}", rule))
        source = getattr(spec, stage)
        if source is not None:
            rule = c.at(f"actions[{i}].{stage}", source)
            if rule is not None:
                rules.append((stage, rule))
                if stage == "eligibility":
                    eligibility = rule
    return Action(
        index=i,
        id=spec.id,
        group=spec.group,
        channels=frozenset(spec.channels),
        lever=lever,  # the action's, times its group's and its issue's
        model=spec.model,
        start=spec.start.timestamp() if spec.start else -math.inf,
        end=spec.end.timestamp() if spec.end else math.inf,
        value_const=value_const,
        value_rule=value_rule,
        eligibility=eligibility,
        rules=tuple(rules),
        mandatory=spec.mandatory,
    )


def _do_nothing(c: _Compiler) -> tuple[float, Rule | None]:
    """The priority of doing nothing: a constant, or a rule (which sees no action)."""
    value = c.config.decisioning.do_nothing_value
    if isinstance(value, str):
        return 0.0, c.at("decisioning.do_nothing_value", value, c.resolver(allow_action=False))
    return float(value), None


def _outbound_rules(c: _Compiler) -> dict[str, Rule]:
    """Per channel, the rule an outbound decision's action must pass to go on it."""
    out: dict[str, Rule] = {}
    for ch, source in c.config.decisioning.outbound.rules.items():
        rule = c.at(f"decisioning.outbound.rules.{ch}", source)
        if rule is not None:
            out[ch] = rule
    return out


def _context_weights(c: _Compiler) -> list[tuple[Rule, float]]:
    out: list[tuple[Rule, float]] = []
    for i, cw in enumerate(c.config.decisioning.context_weights):
        rule = c.at(f"decisioning.context_weights[{i}].when", cw.when)
        if rule is not None:
            out.append((rule, cw.weight))
    return out


def _derived_context(c: _Compiler) -> list[tuple[str, Rule]]:
    """The context fields filled by a lookup when the request does not give them."""
    resolve_lookup = c.resolver(allow_action=False)
    out: list[tuple[str, Rule]] = []
    for i, cf in enumerate(c.config.context):
        if cf.lookup is not None:
            rule = c.at(f"context[{i}].lookup", cf.lookup, resolve_lookup)
            if rule is not None:
                out.append((cf.name, rule))
    return out


def _triggers(c: _Compiler) -> list[Trigger]:
    """Every trigger, its condition compiled (it sees the event, not an action)."""
    resolve_trigger = c.resolver(allow_action=False, allow_event=True)
    out: list[Trigger] = []
    for i, t in enumerate(c.config.triggers):
        when = None
        if t.when is not None:
            when = c.at(f"triggers[{i}].when", t.when, resolve_trigger)
        out.append(
            Trigger(
                id=t.id,
                on=frozenset(t.event),
                when=when,
                crossing=t.crossing,
                not_followed_by=frozenset(t.not_followed_by),
                within=t.within,
                channel=t.channel,
                placement=t.placement,
            )
        )
    return out


def _version(config: Config) -> str:
    """A short hash of what the catalog is compiled from (actions, decisioning, triggers)."""
    dump = json.dumps(
        [s.model_dump(mode="json") for s in config.actions]
        + [config.decisioning.model_dump(mode="json")]
        + ([[t.model_dump(mode="json") for t in config.triggers]] if config.triggers else []),
        sort_keys=True,
    )
    return hashlib.sha256(dump.encode()).hexdigest()[:12]


class Catalog:
    """Compiled actions, indexed by channel, plus the context-weight rules."""

    def __init__(self, config: Config, schema: ProfileSchema) -> None:
        c = _Compiler(config, schema)  # (in this order: it is the order errors are listed)
        self.actions = _actions(c)
        self.do_nothing_const, self.do_nothing_rule = _do_nothing(c)
        self.outbound_rules = _outbound_rules(c)
        self.context_weights = _context_weights(c)
        self.derived_context = _derived_context(c)  # context fields filled by lookups
        self.triggers = _triggers(c)
        if c.errors:
            raise CatalogError(c.errors)
        self.trigger_by_id = {t.id: t for t in self.triggers}
        self.triggers_on: dict[str, list[Trigger]] = {}  # event type -> triggers it fires/arms
        self.cancels: dict[str, list[Trigger]] = {}  # event type -> timers it cancels
        for trig in self.triggers:
            for kind in trig.on:
                self.triggers_on.setdefault(kind, []).append(trig)
            for kind in trig.not_followed_by:
                self.cancels.setdefault(kind, []).append(trig)
        self.by_id = {a.id: a for a in self.actions}
        self.by_channel: dict[str, list[Action]] = {ch: [] for ch in config.channels}
        for a in self.actions:
            for ch in a.channels:
                self.by_channel[ch].append(a)
        self.version = _version(config)
        # per channel: the consent column and the rule (opt_out when not configured)
        self.consent: dict[str, tuple[int, str]] = {
            ch: (schema.index[f"consent_{ch}"], config.decisioning.consent.get(ch, "opt_out"))
            for ch in config.channels
        }

    def live(self, channel: str, now: float) -> list[Action]:
        """Actions deliverable on `channel` whose start/end dates include `now`."""
        return [a for a in self.by_channel.get(channel, ()) if a.start <= now < a.end]

    def do_nothing(self, env: Env) -> float:
        """The priority of doing nothing for this customer and context (0 when null)."""
        if self.do_nothing_rule is None:
            return self.do_nothing_const
        v = self.do_nothing_rule(env)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return 0.0
        return float(v)

    def consented(self, profile: list[float], channel: str) -> tuple[bool, bool | None]:
        """Whether the customer's consent lets a (non-mandatory) action go on `channel`,
        and the recorded consent (None: none recorded)."""
        idx, mode = self.consent[channel]
        v = profile[idx]
        recorded = None if v != v else v > 0.5
        if mode == "opt_in":
            return recorded is True, recorded
        if mode == "opt_out":
            return recorded is not False, recorded
        return True, recorded

    def weight(self, env: Env) -> float:
        """The product of the context weights whose condition holds."""
        w = 1.0
        for rule, weight in self.context_weights:
            if rule.holds(env):
                w *= weight
        return w


class CatalogError(RuleError):
    """One or more catalog rules failed to compile; `locations` says where."""

    def __init__(self, locations: list[RuleLocation]) -> None:
        self.locations = locations
        first = locations[0].error
        super().__init__(first.expression, first.reason, first.line, first.column)

    def problems(self) -> list[tuple[str, str]]:
        return [(loc.field, str(loc.error)) for loc in self.locations]


def context_of(channel: str, placement: str | None, context: Mapping[str, Any]) -> dict[str, Any]:
    """The context rules see: the request's context plus channel and placement."""
    ctx = dict(context)
    ctx["channel"] = channel
    ctx["placement"] = placement
    return ctx
