"""Models: a LightGBM text file plus a manifest; verification; the scorer.

A model version directory holds `model.txt` (LightGBM's own text format, never pickle)
and `manifest.json`. A model is used only if the file's sha256 matches the manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from decisioning.errors import ModelIntegrityError

__all__ = [
    "LightGBMScorer",
    "ModelBundle",
    "ModelManifest",
    "Scorer",
    "read_model_dir",
    "sha256_text",
    "write_model_dir",
]

MODEL_FILE = "model.txt"
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """What a model is: name, version, features in order, integrity and provenance."""

    name: str
    version: int
    features: list[str]
    sha256: str
    categories: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    created_by: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """'name@version', as decisions report it."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelManifest:
        if not isinstance(data, dict):
            raise ModelIntegrityError("manifest must be a JSON object")
        try:
            m = cls(
                name=str(data["name"]),
                version=int(data["version"]),
                features=[str(f) for f in data["features"]],
                sha256=str(data["sha256"]),
                categories={
                    str(k): [str(x) for x in v] for k, v in data.get("categories", {}).items()
                },
                metrics=dict(data.get("metrics", {})),
                created_at=str(data.get("created_at", "")),
                created_by=str(data.get("created_by", "")),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelIntegrityError(f"manifest is missing or has a bad field: {e}") from None
        if not _NAME.match(m.name):
            raise ModelIntegrityError(f"model name {m.name!r} must match {_NAME.pattern}")
        if m.version < 1:
            raise ModelIntegrityError("model version must be >= 1")
        if not m.features:
            raise ModelIntegrityError("manifest lists no features")
        return m


@dataclass(frozen=True, slots=True)
class ModelBundle:
    """A manifest with its model text, verified."""

    manifest: ModelManifest
    model_text: str

    @classmethod
    def verified(cls, manifest: ModelManifest, model_text: str) -> ModelBundle:
        digest = sha256_text(model_text)
        if digest != manifest.sha256:
            raise ModelIntegrityError(
                f"{manifest.ref}: sha256 of the model file is {digest[:12]}…, "
                f"the manifest says {manifest.sha256[:12]}…"
            )
        return cls(manifest, model_text)


def read_model_dir(path: str | Path) -> ModelBundle:
    """Read and verify a model version directory."""
    d = Path(path)
    try:
        manifest = ModelManifest.from_dict(json.loads((d / MANIFEST_FILE).read_text()))
        text = (d / MODEL_FILE).read_text()
    except FileNotFoundError as e:
        raise ModelIntegrityError(f"{d}: {e.filename} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelIntegrityError(f"{d}: unreadable manifest or model: {e}") from None
    return ModelBundle.verified(manifest, text)


def write_model_dir(path: str | Path, bundle: ModelBundle) -> Path:
    """Write a bundle as model.txt + manifest.json (manifest last: its presence = complete)."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    (d / MODEL_FILE).write_text(bundle.model_text)
    tmp = d / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(bundle.manifest.to_dict(), indent=2, sort_keys=True))
    tmp.replace(d / MANIFEST_FILE)
    return d


class Scorer(Protocol):
    """Anything that turns a feature matrix into propensities."""

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class LightGBMScorer:
    """A LightGBM Booster loaded from text; one thread, no shape surprises."""

    def __init__(self, model_text: str) -> None:
        import lightgbm as lgb

        try:
            self.booster = lgb.Booster(model_str=model_text)
        except lgb.basic.LightGBMError as e:
            raise ModelIntegrityError(f"LightGBM cannot load the model: {e}") from None
        self.feature_names = list(self.booster.feature_name())

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)
