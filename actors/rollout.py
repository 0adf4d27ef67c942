"""Models on every shard: deploy a new version, promote, roll back or split traffic with
a challenger, and what each version has done (the supervisor's model concern).

Every change follows actors/fleet.py: staged on every shard, the registry written only
if all accept (a shard restarting from then on loads it), then every shard switches.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from actors.calls import Call, Refusal, error_answer
from actors.fleet import Fleet, stage_all
from actors.shard import OUTCOMES
from decisioning.config import Config, Secrets
from decisioning.errors import ModelError, NextbestError, NotFound
from decisioning.policy.scoring import (
    ModelBundle,
    ModelManifest,
    check_signature,
    compile_native,
    native_tag,
)
from decisioning.stores.registry import Aliases, Registry

__all__ = ["ModelRollout", "native_code", "warm_native"]

log = logging.getLogger("nextbest.actors")


@dataclass(frozen=True)
class _Plan:
    """What a roll-out changes: the aliases after it, and what each shard stages."""

    after: Aliases
    stage: list[tuple[ModelBundle, str, float, bool]]  # bundle, role, share, shadow
    challenger_changed: bool


class ModelRollout:
    """Deploys and rolls out models over `fleet`; the caller runs one change at a time."""

    def __init__(self, config: Config, fleet: Fleet) -> None:
        self.config = config
        self.fleet = fleet

    def deploy(self, manifest: dict[str, Any], model_text: str) -> dict[str, Any] | Refusal:
        """Stage a model on every shard; only if all accept it, register and serve it.
        If any shard refuses it, no shard switches, the registry is untouched, and the
        answer says why."""
        try:
            bundle = ModelBundle.verified(ModelManifest.from_dict(manifest), model_text)
            check_signature(bundle.manifest, Secrets.resolve(self.config, os.environ).model_key())
        except NextbestError as e:
            return error_answer(e)
        name = bundle.manifest.name
        native = native_code(self.config, bundle)
        stage = ("stage_model", (manifest, model_text, native))
        _, refusal = stage_all(self.fleet, [stage], ("abort_model", (name,)))
        if refusal is not None:
            return refusal
        registry = Registry(self.config.server.data_dir)
        try:
            m = registry.register(bundle)
        except ModelError as e:
            self.fleet.abort("abort_model", name)
            return error_answer(e)
        registry.set_deployed(m.name, m.version)  # first: a shard restarting now loads it
        self.fleet.commit("commit_model", name)
        return {"deployed": m.ref, "shards": len(self.fleet)}

    def roll_out(
        self, name: str, op: str, version: int | None, share: float, shadow: bool
    ) -> dict[str, Any] | Refusal:
        """promote (a version, default the challenger), rollback (to the champion before),
        or split (a challenger for a share of customers, or in shadow; no version: end
        it). Every shard stages what changes, then all switch; the aliases are written
        last. If any shard refuses, none switches and the aliases stay."""
        registry = Registry(self.config.server.data_dir)
        if not registry.versions(name):
            return error_answer(
                NotFound(f"no model named {name!r} in the registry", code="unknown_model")
            )
        try:
            plan = self._plan(registry, name, op, version, share, shadow)
        except NextbestError as e:
            return error_answer(e)
        calls: list[Call] = []
        for bundle, role, part, shadowed in plan.stage:
            native = native_code(self.config, bundle)
            m = bundle.manifest.to_dict()
            calls.append(("stage_model", (m, bundle.model_text, native, role, part, shadowed)))
        _, refusal = stage_all(self.fleet, calls, ("abort_model", (name,)))
        if refusal is not None:
            return refusal
        if plan.challenger_changed and plan.after.challenger is None:
            self.fleet.ask("stage_no_challenger", name)
        registry.set_aliases(name, plan.after)  # first: a shard restarting now loads them
        self.fleet.commit("commit_model", name)
        return {"model": name, **plan.after.to_dict(), "shards": len(self.fleet)}

    @staticmethod
    def _plan(
        registry: Registry, name: str, op: str, version: int | None, share: float, shadow: bool
    ) -> _Plan:
        """The aliases after `op`, checked against the registry, and the versions whose
        role changes (each shard stages those). Raises NextbestError if refused."""
        before = registry.aliases(name)
        if op == "promote":
            after = before.promote(version)
        elif op == "rollback":
            after = before.rollback()
        else:
            after = before.split(version, share, shadow)
        for v in (after.champion, after.challenger):
            if v is not None and v not in registry.versions(name):
                raise ModelError(f"{name}@{v} is not in the registry")
        stage: list[tuple[ModelBundle, str, float, bool]] = []
        if after.champion != before.champion and after.champion is not None:
            stage.append((registry.read(name, after.champion), "champion", 0.0, False))
        changed = (after.challenger, after.share, after.shadow) != (
            before.challenger,
            before.share,
            before.shadow,
        )
        if changed and after.challenger is not None:
            bundle = registry.read(name, after.challenger)
            stage.append((bundle, "challenger", after.share, after.shadow))
        return _Plan(after, stage, changed)

    def stats(self, statuses: list[dict[str, Any]]) -> dict[str, Any]:
        """Per model version: its alias, decisions and outcomes, summed over the shards'
        `statuses` (since each shard started; the decision logs hold the whole history)."""
        registry = Registry(self.config.server.data_dir)
        totals: dict[str, dict[str, int]] = {}
        for st in statuses:
            for ref, counts in (st.get("variant_stats") or {}).items():
                t = totals.setdefault(ref, {})
                for k, n in counts.items():
                    t[k] = t.get(k, 0) + n
        out: dict[str, Any] = {}
        for name in registry.names():
            a = registry.aliases(name)
            role = {a.champion: "champion", a.challenger: "shadow" if a.shadow else "challenger"}
            versions = []
            for ref, counts in sorted(totals.items()):
                model, _, v = ref.partition("@")
                if model != name:
                    continue
                shown, accepted = counts.get("impression", 0), counts.get("accept", 0)
                versions.append(
                    {
                        "version": ref,
                        "alias": role.get(int(v)),
                        "decisions": counts.get("decisions", 0),
                        **{k: counts.get(k, 0) for k in OUTCOMES},
                        "accept_rate": accepted / shown if shown else None,
                    }
                )
            out[name] = {"aliases": a.to_dict(), "versions": versions}
        return out


def native_code(config: Config, bundle: ModelBundle) -> bytes | None:
    """The model's native code for this CPU kind: from the registry, else compiled now.

    Shards on nodes of another CPU kind find none for theirs and score with LightGBM
    (they log it); `nextbest status` shows each shard's scorer.
    """
    tag = native_tag() if config.server.scorer == "native" else None
    if tag is None:
        return None
    registry = Registry(config.server.data_dir)
    sha = bundle.manifest.sha256
    native = registry.read_native(sha, tag)
    if native is None:
        started = time.perf_counter()
        try:
            native = compile_native(bundle.model_text)
        except Exception as e:  # noqa: BLE001 - scoring falls back to LightGBM
            log.warning("%s: native compilation failed: %s", bundle.manifest.ref, e)
            return None
        registry.write_native(sha, tag, native)
        log.warning(
            "%s: compiled to native code in %.1fs",
            bundle.manifest.ref,
            time.perf_counter() - started,
        )
    return native


def warm_native(config: Config) -> None:
    """Native code for every deployed model, before the shards start: shards (re)starting
    find it ready in the registry."""
    registry = Registry(config.server.data_dir)
    for name in registry.names():
        try:
            if (version := registry.deployed(name)) is not None:
                native_code(config, registry.read(name, version))
        except ModelError:
            continue
