"""What a shard serves: the config and catalog, the models (champions, challengers),
the context tables and the exploration policy; and the versions staged to replace them
(two-phase, see `staged.py`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from actors.shard.staged import Staged
from decisioning.config import Config, Secrets
from decisioning.errors import ModelError, NextbestError, NotFound
from decisioning.policy.catalog import Catalog
from decisioning.policy.context import ContextTable
from decisioning.policy.decide import LoadedModel
from decisioning.policy.exploration import Explorer
from decisioning.policy.features import FeaturePlan
from decisioning.policy.scoring import (
    LightGBMScorer,
    ModelBundle,
    ModelManifest,
    check_signature,
    scorer_for,
)
from decisioning.profile import ProfileSchema
from decisioning.profile.slots import bucket
from decisioning.stores.catalogs import with_catalog

__all__ = ["Served", "Variant"]

log = logging.getLogger("nextbest.shard")
Variant = tuple[LoadedModel, float, bool]  # a challenger: model, share of customers, shadow
_Catalog = tuple[Config, Catalog, dict[str, LoadedModel], dict[str, Variant]]


def _explorer(config: Config) -> Explorer | None:
    exploration = config.decisioning.exploration
    return Explorer(exploration) if exploration.policy != "none" else None


class Served:
    """The catalog, models and context tables decisions use now; each swapped in one
    assignment at commit, so a decision sees the old or the new, never half."""

    def __init__(
        self,
        shard_id: int,
        config: Config,
        schema: ProfileSchema,
        secrets: Secrets,
        models: Iterable[ModelBundle] = (),
        challengers: Iterable[tuple[ModelBundle, float, bool]] = (),
    ) -> None:
        self.shard_id = shard_id
        self.config = config
        self.schema = schema
        self.secrets = secrets  # the model signing key of this process, if any
        self.catalog = Catalog(config, schema)
        self.explorer = _explorer(config)
        self.models: dict[str, LoadedModel] = {}  # the champions
        # per model name: (challenger, share of customers, shadow: scored, never used)
        self.challengers: dict[str, Variant] = {}
        self.tables: dict[str, ContextTable] = {}  # external context tables, by name
        self.refused: dict[str, str] = {}  # models refused at start: model ref -> why
        self._models: Staged[Variant | None] = Staged()  # by (name, role); None: stop
        self._catalog: Staged[_Catalog] = Staged()
        self._tables: Staged[ContextTable] = Staged()
        for bundle in models:
            if (loaded := self._load_at_start(bundle)) is not None:
                self.models[bundle.manifest.name] = loaded
        for bundle, share, shadow in challengers:
            if (loaded := self._load_at_start(bundle)) is not None:
                self.challengers[bundle.manifest.name] = (loaded, share, shadow)

    # -- models --------------------------------------------------------------------------

    def load(self, bundle: ModelBundle) -> LoadedModel:
        """Verify a model (hash, signature, features) and build its scorer."""
        m = bundle.manifest
        ModelBundle.verified(m, bundle.model_text)
        check_signature(m, self.secrets.model_key())
        plan = FeaturePlan.build(
            m.ref, m.features, m.categories, self.config, self.schema, self.catalog
        )
        reference = LightGBMScorer(bundle.model_text)
        if reference.feature_names != list(m.features):
            raise ModelError(
                f"{m.ref}: the model file's features do not match the manifest's "
                f"(file: {reference.feature_names[:5]}…, manifest: {list(m.features)[:5]}…)"
            )
        sizes = {c: len(m.categories.get(m.features[c], ())) for c in plan.categorical}
        use_native = self.config.server.scorer == "native"
        scorer, kind = scorer_for(bundle, reference, sizes, use_native)
        return LoadedModel(m, scorer, plan, kind)

    def _load_at_start(self, bundle: ModelBundle) -> LoadedModel | None:
        """A deployed model at (re)start; one that is refused (unsigned, tampered, features
        this shard cannot build) is logged and left out: the shard serves without it,
        rather than fail its start (Ray would restart it in a loop)."""
        try:
            return self.load(bundle)
        except NextbestError as e:
            self.refused[bundle.manifest.ref] = str(e)
            log.error(
                "shard %d: model %s refused at start: %s", self.shard_id, bundle.manifest.ref, e
            )
            return None

    def stage_model(
        self,
        manifest: dict[str, Any],
        model_text: str,
        native: bytes | None = None,
        role: str = "champion",
        share: float = 0.0,
        shadow: bool = False,
    ) -> str:
        """Load and check a model without serving it; raises ModelError if refused."""
        bundle = ModelBundle.verified(ModelManifest.from_dict(manifest), model_text, native)
        loaded = self.load(bundle)
        self._models.stage((loaded, share, shadow), (loaded.manifest.name, role))
        return loaded.manifest.ref

    def stage_no_challenger(self, name: str) -> None:
        self._models.stage(None, (name, "challenger"))

    def commit_model(self, name: str) -> str:
        """Serve what is staged for `name` (champion, challenger or both)."""

        def champion(staged: Variant | None) -> None:
            assert staged is not None
            self.models[name] = staged[0]
            self.refused = {r: w for r, w in self.refused.items() if r.split("@")[0] != name}

        def challenger(staged: Variant | None) -> None:
            if staged is None:
                self.challengers.pop(name, None)
            else:
                self.challengers[name] = staged

        self._models.commit(champion, (name, "champion"))
        self._models.commit(challenger, (name, "challenger"))
        return self.models[name].manifest.ref if name in self.models else ""

    def abort_model(self, name: str) -> None:
        self._models.abort((name, "champion"))
        self._models.abort((name, "challenger"))

    def variant(
        self, customer_id: str
    ) -> tuple[dict[str, LoadedModel], str, dict[str, LoadedModel]]:
        """The models that decide for this customer, the variant, and the shadow models."""
        if not self.challengers:
            return self.models, "champion", {}
        models, variant, shadows = self.models, "champion", {}
        for name, (m, share, shadow) in self.challengers.items():
            if shadow:
                shadows[name] = m
            elif bucket(name, customer_id) < share:
                models = {**models, name: m}
                variant = "challenger"
        return models, variant, shadows

    def customer_score(self, name: str, profile: np.ndarray) -> float | None:
        """The champion `name`'s score for a customer, for a customer-level model (one
        with no action, value or channel features; null for any other, and when no such
        model is served)."""
        m = self.models.get(name)
        if m is None or m.plan.action_cols or m.plan.value_col >= 0 or m.plan.channel_col >= 0:
            return None
        x = m.plan.matrix(profile, self.catalog.actions[:1], [0.0], "", {})
        return float(m.scorer.predict(x)[0])

    def model_versions(self) -> dict[str, str]:
        return {name: m.manifest.ref for name, m in self.models.items()}

    def challenger_versions(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"version": m.manifest.ref, "share": share, "shadow": shadow}
            for name, (m, share, shadow) in self.challengers.items()
        }

    def scorers(self) -> dict[str, str]:
        return {name: m.scorer_kind for name, m in self.models.items()}

    # -- catalog -------------------------------------------------------------------------

    def stage_catalog(self, catalog: dict[str, Any]) -> str:
        """Check a new catalog and prepare it (models' feature plans rebuilt for its
        actions) without serving it; raises ConfigError or ModelError if refused."""
        config = with_catalog(self.config, catalog)
        cat = Catalog(config, self.schema)

        def replan(m: LoadedModel) -> LoadedModel:
            f = m.manifest
            plan = FeaturePlan.build(f.ref, f.features, f.categories, config, self.schema, cat)
            return LoadedModel(f, m.scorer, plan, m.scorer_kind)

        models = {n: replan(m) for n, m in self.models.items()}
        challengers = {n: (replan(m), a, b) for n, (m, a, b) in self.challengers.items()}
        self._catalog.stage((config, cat, models, challengers))
        return cat.version

    def commit_catalog(self) -> bool:
        """Serve the staged catalog (False: nothing staged, the shard restarted since
        staging and loaded the new one)."""
        return self._catalog.commit(self._serve_catalog)

    def _serve_catalog(self, staged: _Catalog) -> None:
        self.config, self.catalog, self.models, self.challengers = staged
        self.explorer = _explorer(self.config)

    def abort_catalog(self) -> None:
        self._catalog.abort()

    # -- context tables ------------------------------------------------------------------

    def stage_context(self, name: str, version: str, table: pa.Table) -> str:
        """Index a new version of a context table without serving it (raises
        InvalidInput if it does not fit the table's spec)."""
        spec = self.config.context_tables.get(name)
        if spec is None:
            raise NotFound(f"unknown context table {name!r}", field="table", code="unknown_table")
        self._tables.stage(ContextTable.build(name, spec, table, version), name)
        return version

    def commit_context(self, name: str) -> str | None:
        def serve(staged: ContextTable) -> None:
            self.tables = {**self.tables, name: staged}

        self._tables.commit(serve, name)
        return self.tables[name].version if name in self.tables else None

    def abort_context(self, name: str) -> None:
        self._tables.abort(name)

    def context_status(self) -> dict[str, Any]:
        return {name: t.status() for name, t in self.tables.items()}
