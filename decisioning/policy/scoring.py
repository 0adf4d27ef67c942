"""Models: a LightGBM text file plus a manifest; verification; the scorer.

A model version directory holds `model.txt` (LightGBM's own text format, never pickle)
and `manifest.json`. A model is used only if the file's sha256 matches the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import platform
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from decisioning.errors import ModelIntegrityError

__all__ = [
    "LightGBMScorer",
    "ModelBundle",
    "ModelManifest",
    "NativeScorer",
    "Scorer",
    "compile_native",
    "cross_check",
    "native_tag",
    "read_model_dir",
    "scorer_for",
    "sha256_text",
    "write_model_dir",
]

log = logging.getLogger("nextbest.model")

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
    signature: str = ""  # hex HMAC-SHA256 of signing_payload() (see sign / check_signature)

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
                signature=str(data.get("signature", "")),
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
    native: bytes | None = None
    """The model compiled to machine code for this host's `native_tag()`, if any."""

    @classmethod
    def verified(
        cls, manifest: ModelManifest, model_text: str, native: bytes | None = None
    ) -> ModelBundle:
        digest = sha256_text(model_text)
        if digest != manifest.sha256:
            raise ModelIntegrityError(
                f"{manifest.ref}: sha256 of the model file is {digest[:12]}…, "
                f"the manifest says {manifest.sha256[:12]}…"
            )
        return cls(manifest, model_text, native)

    def with_native(self, native: bytes | None) -> ModelBundle:
        return replace(self, native=native)


def signing_payload(m: ModelManifest) -> bytes:
    """What a signature covers: the model file (by its sha256) and how its features are
    read — not the version number, which the registry assigns."""
    body = {"name": m.name, "sha256": m.sha256, "features": m.features, "categories": m.categories}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(m: ModelManifest, key: bytes) -> ModelManifest:
    """The manifest with its HMAC-SHA256 signature."""
    return replace(m, signature=hmac.new(key, signing_payload(m), hashlib.sha256).hexdigest())


def check_signature(m: ModelManifest, key: bytes | None) -> None:
    """With a key configured, a model must carry a valid signature (ModelIntegrityError)."""
    if key is None:
        return
    if not m.signature:
        raise ModelIntegrityError(f"{m.ref}: unsigned, and models must be signed here")
    expected = hmac.new(key, signing_payload(m), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m.signature):
        raise ModelIntegrityError(f"{m.ref}: the signature does not verify with this key")


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


# -- native scoring (lleaves) ------------------------------------------------------------
#
# lleaves compiles a LightGBM model to machine code with LLVM: the same trees, the same
# float64 arithmetic, about 5x faster than Booster.predict for the 20 rows of a decision.
# Compiling takes seconds (about 7 s for 200 trees), so it is done once per model and CPU
# (`native_tag`) by the supervisor, stored in the registry, and loaded by every shard in
# milliseconds. A shard uses the native code only after it has given the same
# propensities as LightGBM on a probe matrix (`cross_check`); otherwise it scores with
# LightGBM and says so.

NATIVE_TOLERANCE = 1e-9


def native_tag() -> str | None:
    """What native code compiled here can run on; None when lleaves is not installed."""
    try:
        import lleaves  # noqa: F401 - only whether it is there
        import llvmlite
        import llvmlite.binding as llvm
    except ImportError:
        return None
    features = hashlib.sha256(llvm.get_host_cpu_features().flatten().encode()).hexdigest()
    return (
        f"{platform.machine()}-{llvm.get_host_cpu_name()}-{features[:12]}"
        f"-lleaves{metadata.version('lleaves')}-llvmlite{llvmlite.__version__}"
    )


def compile_native(model_text: str) -> bytes:
    """Compile a LightGBM text model to this host's machine code (takes seconds)."""
    import lleaves

    with tempfile.TemporaryDirectory(prefix="nextbest-native-") as d:
        txt, obj = os.path.join(d, "model.txt"), os.path.join(d, "model.o")
        Path(txt).write_text(model_text)
        lleaves.Model(model_file=txt).compile(cache=obj)
        return Path(obj).read_bytes()


class NativeScorer:
    """A model's native code (from `compile_native`), loaded into this process."""

    def __init__(self, model_text: str, native: bytes) -> None:
        import lleaves

        # LLVM aborts the whole process on a malformed object file, so only whole files
        # get here: the registry checks their sha256, and this checks what they are
        if native[:4] != b"\x7fELF":
            raise ValueError("not an ELF object file")
        with tempfile.TemporaryDirectory(prefix="nextbest-native-") as d:
            txt, obj = os.path.join(d, "model.txt"), os.path.join(d, "model.o")
            Path(txt).write_text(model_text)
            Path(obj).write_bytes(native)
            self.model = lleaves.Model(model_file=txt)
            self.model.compile(cache=obj)  # loads the object file: no compilation

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x, n_jobs=1), dtype=np.float64)


def probe_matrix(n_features: int, categorical: dict[int, int], rows: int = 512) -> np.ndarray:
    """Rows that walk many tree paths: wide numeric ranges, every category, missing values."""
    rng = np.random.default_rng(20261124)
    x = rng.normal(0.0, 1.0, (rows, n_features)) * rng.choice([1.0, 10.0, 1000.0], (rows, 1))
    x[rng.random((rows, n_features)) < 0.1] = np.nan
    x[rng.random((rows, n_features)) < 0.1] = 0.0
    for col, size in categorical.items():
        x[:, col] = rng.integers(0, max(size, 1) + 1, rows)
    return x


def cross_check(native: Scorer, reference: Scorer, x: np.ndarray) -> float:
    """Largest absolute difference of the two scorers' propensities on `x`."""
    return float(np.max(np.abs(native.predict(x) - reference.predict(x))))


def scorer_for(
    bundle: ModelBundle, reference: LightGBMScorer, categorical: dict[int, int], use_native: bool
) -> tuple[Scorer, str]:
    """The scorer a shard should use for `bundle`, and its kind ("native" or "lightgbm").

    Native code is used only if it is there, loads, and matches LightGBM on the probe
    matrix to within NATIVE_TOLERANCE; every fallback is logged with its reason.
    """
    ref = bundle.manifest.ref
    if not use_native:
        return reference, "lightgbm"
    if bundle.native is None:
        log.warning(
            "%s: no native code for this CPU (%s); scoring with LightGBM", ref, native_tag()
        )
        return reference, "lightgbm"
    try:
        native = NativeScorer(bundle.model_text, bundle.native)
        diff = cross_check(
            native, reference, probe_matrix(len(bundle.manifest.features), categorical)
        )
    except Exception as e:  # noqa: BLE001 - any failure here means: use LightGBM
        log.warning("%s: native code did not load (%s); scoring with LightGBM", ref, e)
        return reference, "lightgbm"
    if not diff <= NATIVE_TOLERANCE:
        log.warning(
            "%s: native code differs from LightGBM by %.3g (> %g); scoring with LightGBM",
            ref,
            diff,
            NATIVE_TOLERANCE,
        )
        return reference, "lightgbm"
    return native, "native"
