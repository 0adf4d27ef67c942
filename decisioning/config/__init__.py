"""The typed config tree: profile schema, catalog, decisioning and server settings.

Loaded once at the edge (see `decisioning.config.loader.load_config`); the core receives
these objects and never reads environment variables itself (secrets the config names
are resolved by the process that uses them: `decisioning.config.secrets`).

One module per section, and this package re-exports their public names:

    fields     Duration, Ident, the strict base every section shares
    profile    profile:         attributes, aggregates, event time limits
    context    context, context_tables: request fields and looked-up tables
    catalog    actions:         the action catalog (rules, levers, budgets, suppression)
    policy     decisioning:     arbitration, consent, caps, exploration, outbound
    delivery   triggers, delivery: event triggers, the outbound queue, sinks, open links
    identity   identity:        identifier kinds and links
    auth       auth:            API keys and scopes, the signing key's variable
    logs       logs:            decision and outcome logs
    server     server:          ports, shards, limits, durability
    tree       Config, the whole file; checks: the rules across sections
    secrets    Secrets, the keys the config names, resolved per process
"""

from __future__ import annotations

from decisioning.config.auth import SCOPES, ApiKeySpec, AuthSpec, Scope
from decisioning.config.catalog import ActionSpec, BudgetSpec, OutcomeKind, SuppressSpec
from decisioning.config.context import ContextFieldSpec, ContextTableSpec
from decisioning.config.delivery import (
    DeliverySpec,
    ParquetSinkSpec,
    SinkSpec,
    TriggerSpec,
    WebhookSinkSpec,
)
from decisioning.config.fields import Duration, Ident, Scalar, parse_duration
from decisioning.config.identity import IdentitySpec
from decisioning.config.logs import LogsSpec
from decisioning.config.policy import (
    OUTBOUND,
    ChannelCapSpec,
    ContextWeightSpec,
    DecisioningSpec,
    ExplorationSpec,
    GroupCapSpec,
    GroupRulesSpec,
    OutboundSpec,
)
from decisioning.config.profile import AggregateKind, AggregateSpec, AttributeSpec, ProfileSpec
from decisioning.config.secrets import Secrets
from decisioning.config.server import ServerSpec
from decisioning.config.tree import Config

__all__ = [
    "OUTBOUND",
    "SCOPES",
    "ActionSpec",
    "AggregateKind",
    "AggregateSpec",
    "ApiKeySpec",
    "AttributeSpec",
    "AuthSpec",
    "BudgetSpec",
    "ChannelCapSpec",
    "Config",
    "ContextFieldSpec",
    "ContextTableSpec",
    "ContextWeightSpec",
    "DecisioningSpec",
    "DeliverySpec",
    "Duration",
    "ExplorationSpec",
    "GroupCapSpec",
    "GroupRulesSpec",
    "IdentitySpec",
    "Ident",
    "LogsSpec",
    "OutboundSpec",
    "OutcomeKind",
    "ParquetSinkSpec",
    "ProfileSpec",
    "Scalar",
    "Scope",
    "Secrets",
    "ServerSpec",
    "SinkSpec",
    "SuppressSpec",
    "TriggerSpec",
    "WebhookSinkSpec",
    "parse_duration",
]
